# syntax=docker/dockerfile:1
# The service's image. Two stages: the build stage compiles the core (Cython,
# vendored zstd) and installs the package into a virtual environment at
# /opt/venv; the final stage copies only that environment, so no wheel, no
# compiler and no pip cache is in any of its layers.
#
#   docker build \
#     --build-arg VERSION=1.2.3 \
#     --build-arg PYTHON_DIGEST=sha256:<digest of python:3.12.11-slim-bookworm> \
#     --build-arg VCS_REF=$(git rev-parse HEAD) \
#     -t stellar-live-source-datalake:1.2.3 .
#
# VERSION feeds SETUPTOOLS_SCM_PRETEND_VERSION: the build context has no .git
# (.dockerignore), so setuptools-scm cannot read the tag. PYTHON_DIGEST pins
# the base image to one build of the tag; the image workflow fills it in. Left
# empty, the tag alone is used (a local build).
ARG PYTHON_TAG=3.12.11-slim-bookworm
ARG PYTHON_DIGEST=""

FROM python:${PYTHON_TAG}${PYTHON_DIGEST:+@${PYTHON_DIGEST}} AS build
ARG VERSION=0.0.0+unknown
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md CHANGELOG.md ./
COPY ext ext
COPY pysrc pysrc
COPY proto proto
# The package and its dependencies go straight into the venv (no wheel kept).
RUN SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}" pip install --no-compile . \
    && python -m compileall -q /opt/venv/lib

FROM python:${PYTHON_TAG}${PYTHON_DIGEST:+@${PYTHON_DIGEST}}
ARG VERSION=0.0.0+unknown
ARG VCS_REF=""
LABEL org.opencontainers.image.title="stellar-live-source-datalake" \
      org.opencontainers.image.description="Streams Stellar ledgers from a datalake over gRPC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/withObsrvr/stellar-live-source-datalake" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY config /etc/stellar-live-source
# CONFIG_FILE names a YAML file: mount yours (a ConfigMap, a bind mount) and
# point CONFIG_FILE at it. Empty (the default), the built-in defaults and the
# environment apply, and with no storage set the embedded sample lake is served.
# HEALTH_PORT is read by the health check below as well as by the service.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONFIG_FILE="" \
    SERVER_HOST=0.0.0.0 \
    HEALTH_PORT=8088
USER 10001:10001
# gRPC, HTTP health (/health, /ready), Prometheus metrics
EXPOSE 50052 8088 9090
# Liveness on the configured HEALTH_PORT. With TLS_ENABLED=true the health
# listener serves HTTPS: the check then speaks HTTPS and skips certificate
# verification (it dials 127.0.0.1, which the certificate does not name).
# HEALTH_PORT and TLS_ENABLED must be set in the environment for this; a
# value set only in the CONFIG_FILE is not seen here.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,ssl,sys,urllib.request as u; t=os.environ.get('TLS_ENABLED','').lower() in ('1','true','yes','on'); p=os.environ.get('HEALTH_PORT') or '8088'; c=ssl._create_unverified_context() if t else None; sys.exit(u.urlopen(('https' if t else 'http')+'://127.0.0.1:'+p+'/health', timeout=2, context=c).status != 200)"]
# SIGTERM starts the drain: not ready, streams ended with UNAVAILABLE, calls in
# flight get GRACEFUL_SHUTDOWN_TIMEOUT. The orchestrator's grace period
# (terminationGracePeriodSeconds, compose stop_grace_period) must exceed it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["stellar-live-source"]
CMD ["serve"]
