# syntax=docker/dockerfile:1
# The kubeswarm images, one target each:
#   docker build --target runtime  -t kubeswarm/runtime:0.1.0 .
#   docker build --target operator -t kubeswarm/operator:0.1.0 .
# (`make images` builds both.) Each final stage is the pinned Python base plus one virtualenv
# built by images/install.sh from a hashed lock: no compiler, no pip, no build backend.
# The runtime image carries neither kopf nor a Kubernetes client.

# Exact patch release and Debian suite; pin the digest as well where the build can resolve it:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY images/ images/
COPY runtime/ runtime/
COPY operator/ operator/

FROM build AS runtime-venv
RUN images/install.sh runtime /opt/kubeswarm

FROM build AS operator-venv
RUN images/install.sh operator /opt/kubeswarm

# What both final images share: the base without pip and setuptools, an unprivileged user
# (the uid the operator's pod security context and the chart expect), the venv first on PATH.
FROM ${PYTHON_IMAGE} AS base
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kubeswarm
ENV PATH=/opt/kubeswarm/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp

FROM base AS runtime
COPY --from=runtime-venv /opt/kubeswarm /opt/kubeswarm
# MCP endpoint and probes; Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "kubeswarm_runtime"]

FROM base AS operator
COPY --from=operator-venv /opt/kubeswarm /opt/kubeswarm
# Prometheus metrics; kopf's liveness endpoint.
EXPOSE 9091 8081
ENTRYPOINT ["python", "-m", "kubeswarm_operator"]
