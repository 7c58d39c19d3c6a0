# syntax=docker/dockerfile:1
#
# cdc-claims: one image for every role (run consumer | run writer | run poller | check-mapping | rerun-held).
#
#   docker build -t cdc-claims:dev .
#   docker run --rm -e CDC_CLAIMS_MAPPING_FILE=/etc/cdc-claims/mapping/mapping.yaml cdc-claims:dev run writer
#
# The base image is pinned by tag; pin it by digest too (python:3.11.14-slim-bookworm@sha256:...)
# in the registry you build from, and let a bot bump both together.
#
# BASE is any Debian bookworm image with Python 3.11 and venv (both stages use it): the official
# python image (python at /usr/local/bin) or Debian's own python3 (/usr/bin/python3). Everything
# below calls `python3` and the venv's pip, so it works with both. CI builds and runs this file
# without a Docker engine or registry, from a debootstrap base: `bash .ci/image.sh`.
#
#   buildah bud --isolation chroot --format docker --build-arg BASE=localhost/cdc-claims-base:<key> -t cdc-claims:ci .
#
# (--format docker keeps the HEALTHCHECK, which the OCI image format has no field for.)

ARG BASE=python:3.11.14-slim-bookworm

############################ builder: wheel + virtualenv ############################
FROM ${BASE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Build a wheel of the project (runtime dependencies only: no [dev] extra) ...
# README* is a wildcard so the build does not depend on it existing (pyproject names it as the readme).
COPY pyproject.toml README* ./
COPY cdc_claims ./cdc_claims
# ... with the pip of the virtualenv that will ship: the base needs python3 and venv, no pip on
# PATH (the build backend runs in pip's isolated build environment, not in that venv) ...
RUN python3 -m venv /opt/cdc-claims \
    && /opt/cdc-claims/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ... and install it with its runtime dependencies there: a self-contained virtualenv.
# Byte-code is compiled here, so the runtime can keep a read-only root filesystem.
RUN /opt/cdc-claims/bin/pip install --no-cache-dir /wheels/cdc_claims-*.whl \
    && /opt/cdc-claims/bin/python -m compileall -q /opt/cdc-claims/lib \
    && /opt/cdc-claims/bin/cdc-claims --help > /dev/null

############################ runtime ############################
FROM ${BASE} AS runtime

LABEL org.opencontainers.image.title="cdc-claims" \
      org.opencontainers.image.description="Bahmni/OpenMRS encounters to openIMIS FHIR R4 Claims via Debezium CDC, Kafka and openHIM" \
      org.opencontainers.image.licenses="MPL-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/cdc-claims/bin:${PATH}" \
    CDC_CLAIMS_METRICS_PORT=9464 \
    CDC_CLAIMS_MAPPING_FILE=/etc/cdc-claims/mapping/mapping.yaml

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 cdcclaims \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin cdcclaims

COPY --from=builder /opt/cdc-claims /opt/cdc-claims

WORKDIR /tmp
USER 10001:10001

# 9464: /metrics and the probes of every role; 8080: the claims desk (`run desk`)
EXPOSE 9464 8080

# Liveness only (/healthz); readiness (/readyz) is for the orchestrator. No curl in slim: stdlib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CDC_CLAIMS_METRICS_PORT', '9464') + '/healthz', timeout=4)"]

ENTRYPOINT ["cdc-claims"]
CMD ["run", "consumer"]
