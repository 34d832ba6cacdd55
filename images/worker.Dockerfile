# syntax=docker/dockerfile:1.7
#
# dataops-operator worker: the data plane. Every stage pod of a PipelineRun (validate, load, and the Beam
# launcher of transform/aggregate) runs this image with the very command the local executor runs:
#
#   python -m beam.stages STAGE --spec FILE --workdir DIR [--result-file FILE] [-- beam options]
#
# Build from the repository root (images/README.md):
#   docker build -f images/worker.Dockerfile -t REGISTRY/worker:VERSION .

ARG PYTHON_VERSION=3.11.13
ARG DEBIAN_RELEASE=bookworm

# ---- build: resolve and install the project into a virtualenv ----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build

# apache-beam[gcp] brings the DataflowRunner and the BigQuery/GCS/Pub/Sub IO; keep it equal to the Beam
# version the project resolves (pyproject.toml) and to the flex-template image's BEAM_VERSION.
ARG BEAM_VERSION=2.77.0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
COPY beam/ beam/

RUN python -m venv /opt/venv \
    && pip install --no-cache-dir . "apache-beam[gcp]==${BEAM_VERSION}" \
    && python -c "import beam.stages, beam.pipelines.tds, beam.pipelines.bds"

# ---- runtime: the virtualenv on a clean base, no compilers, no sources, not root ---------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}

LABEL org.opencontainers.image.title="dataops-operator worker" \
      org.opencontainers.image.description="Stages of a PipelineRun: python -m beam.stages STAGE ..."

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/work

RUN groupadd --system --gid 10001 dataops \
    && useradd --system --uid 10001 --gid dataops --home-dir /work --no-create-home --shell /usr/sbin/nologin dataops \
    && install --directory --owner=10001 --group=10001 --mode=0750 /work

COPY --from=build /opt/venv /opt/venv

WORKDIR /work
USER 10001:10001

# A stage is a batch process that exits with its outcome (0 ok, 65 bad input, 1 retryable); Kubernetes reads the
# exit code and the controller the result file. There is nothing to probe while it runs.
HEALTHCHECK NONE

ENTRYPOINT ["python", "-m", "beam.stages"]
CMD ["--help"]
