# syntax=docker/dockerfile:1
#
# cdc-claims: one image for every role (run consumer | run writer | run poller | check-mapping | rerun-held).
#
#   docker build -t cdc-claims:dev .
#   docker run --rm -e CDC_CLAIMS_MAPPING_FILE=/etc/cdc-claims/mapping/mapping.yaml cdc-claims:dev run writer
#
# The base image is pinned by tag; pin it by digest too (python:3.11.14-slim-bookworm@sha256:...)
# in the registry you build from, and let a bot bump both together.

############################ builder: wheel + virtualenv ############################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Build a wheel of the project (runtime dependencies only: no [dev] extra) ...
# README* is a wildcard so the build does not depend on it existing (pyproject names it as the readme).
COPY pyproject.toml README* ./
COPY cdc_claims ./cdc_claims
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ... and install it with its runtime dependencies into a self-contained virtualenv.
# Byte-code is compiled here, so the runtime can keep a read-only root filesystem.
RUN python -m venv /opt/cdc-claims \
    && /opt/cdc-claims/bin/pip install --no-cache-dir /wheels/cdc_claims-*.whl \
    && /opt/cdc-claims/bin/python -m compileall -q /opt/cdc-claims/lib \
    && /opt/cdc-claims/bin/cdc-claims --help > /dev/null

############################ runtime ############################
FROM python:3.11.14-slim-bookworm AS runtime

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

EXPOSE 9464

# Liveness only (/healthz); readiness (/readyz) is for the orchestrator. No curl in slim: stdlib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CDC_CLAIMS_METRICS_PORT', '9464') + '/healthz', timeout=4)"]

ENTRYPOINT ["cdc-claims"]
CMD ["run", "consumer"]
