# syntax=docker/dockerfile:1
# One image for every closedloop process, chosen by command:
#   docker run IMAGE collector | worker | sink | deliver | migrate | up | report ... (the `closedloop` CLI)
# Build: docker build -t closedloop:0.1.0 .      (deploy/compose/ and deploy/k8s/ use this image)
#
# The base is pinned to an exact tag (the Python the test suite runs on); pin it by digest too in your registry
# (`docker buildx imagetools inspect python:3.11.13-slim-bookworm` prints it): PYTHON_IMAGE=python:...@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# -- build: a virtualenv with closedloop and its dependencies, from this repository's own files ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# a compiler for the odd dependency without a wheel for this platform; it stays in this stage
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/closedloop
WORKDIR /src
# the dependencies first, from pyproject.toml alone, so a code change does not reinstall them
COPY pyproject.toml README.md ./
RUN mkdir -p schemas && touch schemas/__init__.py \
 && /opt/closedloop/bin/pip install . \
 && /opt/closedloop/bin/pip uninstall -y closedloop \
 && rm -rf build schemas
COPY schemas/ schemas/
COPY compat/ compat/
COPY collector/ collector/
COPY stream_jobs/ stream_jobs/
COPY sinks/ sinks/
COPY delivery/ delivery/
COPY dashboard/ dashboard/
COPY clickhouse_endpoint/ clickhouse_endpoint/
COPY simulator/ simulator/
COPY deploy/ deploy/
COPY closedloop/ closedloop/
RUN /opt/closedloop/bin/pip install --no-deps . \
 && /opt/closedloop/bin/closedloop --help >/dev/null

# -- runtime: the virtualenv, a non-root user, nothing else ----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="closedloop" \
      org.opencontainers.image.description="Closed-loop marketing pipeline: collector, worker, sink, delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 closedloop \
 && useradd --system --uid 10001 --gid closedloop --home-dir /var/lib/closedloop --create-home \
      --shell /usr/sbin/nologin closedloop
COPY --from=build /opt/closedloop /opt/closedloop
# The data directory holds the collector's spool and the webhook dedup store, the worker's local state: mount a
# volume there. Servers bind every interface inside the container (the defaults are loopback only).
ENV PATH=/opt/closedloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CLOSEDLOOP_DATA_DIR=/var/lib/closedloop \
    CLOSEDLOOP_HOST=0.0.0.0 \
    CLOSEDLOOP_WORKER_WEB_HOST=0.0.0.0 \
    CLOSEDLOOP_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/closedloop
VOLUME ["/var/lib/closedloop"]
# collector HTTP, worker web (/counters/), sink metrics (CLOSEDLOOP_SINK_METRICS_PORT)
EXPOSE 8000 6066 9108
ENTRYPOINT ["closedloop"]
CMD ["--help"]
