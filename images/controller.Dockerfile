# syntax=docker/dockerfile:1.7
#
# dataops-operator controller: the control plane (kopf). The image runs the project's `dataops` command,
#   python -m controller ARGS...
# and the Helm chart passes the arguments that start the operator. The operator serves its liveness endpoint
# on :8080/healthz (kopf's --liveness), which the HEALTHCHECK below and the chart's probes use.
#
# Build from the repository root (images/README.md):
#   docker build -f images/controller.Dockerfile -t REGISTRY/controller:VERSION .

ARG PYTHON_VERSION=3.11.13
ARG DEBIAN_RELEASE=bookworm

# ---- build: resolve and install the project into a virtualenv ----------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
COPY beam/ beam/

RUN python -m venv /opt/venv \
    && pip install --no-cache-dir . \
    && python -c "import controller.cli, controller.planner"

# ---- runtime: the virtualenv on a clean base, no compilers, no sources, not root ---------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}

LABEL org.opencontainers.image.title="dataops-operator controller" \
      org.opencontainers.image.description="kopf operator for PipelineRun and IngestionSource (dataops.io/v1alpha1)"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

RUN groupadd --system --gid 10001 dataops \
    && useradd --system --uid 10001 --gid dataops --no-create-home --home-dir /tmp --shell /usr/sbin/nologin dataops

COPY --from=build /opt/venv /opt/venv

WORKDIR /tmp
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["python", "-m", "controller"]
