# syntax=docker/dockerfile:1.7
#
# Dataflow flex template for the Beam pipelines (TDS, BDS), Python. One image, two roles:
#   - the flex template launcher: Dataflow starts /opt/google/dataflow/python_template_launcher (from the base
#     image), which runs FLEX_TEMPLATE_PYTHON_PY_FILE with the template parameters to submit the job;
#   - the SDK container of the job's workers (--sdk_container_image=<this image>): its ENTRYPOINT is Beam's boot.
# Everything the pipelines import is installed here, so neither role installs anything at launch.
#
# The controller launches the stage template (entry file beam/stages/flex.py, parameters in
# images/dataflow-template/stage-metadata.json): a stage of a `runner: dataflow` run, as `python -m beam.stages`.
# Build from the repository root, then register the template specs (images/README.md):
#   docker build -f images/dataflow-template.Dockerfile -t REGISTRY/dataflow-template:VERSION .

ARG LAUNCHER_TAG=20240812-rc01
ARG BEAM_VERSION=2.77.0

# Beam's SDK harness (boot) for this exact Beam version.
FROM apache/beam_python3.11_sdk:${BEAM_VERSION} AS beam-sdk

# ---- build: wheels of the project and of everything it needs ------------------------------------------------------
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG} AS build

ARG BEAM_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
COPY beam/ beam/

RUN pip wheel --no-cache-dir --wheel-dir /wheels . "apache-beam[gcp]==${BEAM_VERSION}"

# ---- runtime: the launcher base with the wheels installed, no sources, not root -----------------------------------
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG}

ARG BEAM_VERSION
ARG PIPELINE=flex

LABEL org.opencontainers.image.title="dataops-operator dataflow-template" \
      org.opencontainers.image.description="Dataflow flex template (launcher and SDK container) for the stages and the TDS and BDS pipelines"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/dataops_operator-*.whl "apache-beam[gcp]==${BEAM_VERSION}" \
    && python -c "import apache_beam, beam.pipelines.tds, beam.pipelines.bds, beam.stages.flex, beam.consolidation.flex; assert apache_beam.__version__ == '${BEAM_VERSION}'" \
    && groupadd --system --gid 10001 dataops \
    && useradd --system --uid 10001 --gid dataops --home-dir /template --no-create-home --shell /usr/sbin/nologin dataops \
    && install --directory --owner=10001 --group=10001 --mode=0755 /template

COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam

WORKDIR /template
# The entry files, from the same sources the wheel was built from. Each template spec picks one: this image
# defaults to ${PIPELINE} (flex.py, the stage entry the controller launches); the TDS and BDS specs override
# FLEX_TEMPLATE_PYTHON_PY_FILE (images/README.md).
COPY --chown=10001:10001 beam/stages/flex.py beam/pipelines/tds.py beam/pipelines/bds.py ./
# The consolidation spec's entry file (FLEX_TEMPLATE_PYTHON_PY_FILE=/template/consolidation/flex.py).
COPY --chown=10001:10001 beam/consolidation/flex.py consolidation/

# Dependencies are all installed above: no requirements file, setup file or extra packages to stage at launch.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/${PIPELINE}.py \
    HOME=/template

USER 10001:10001

# The launcher is a one-shot process and the SDK harness is supervised by Dataflow: nothing to probe.
HEALTHCHECK NONE

ENTRYPOINT ["/opt/apache/beam/boot"]
