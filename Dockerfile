# syntax=docker/dockerfile:1
# The kubeswarm images, one target each:
#   docker build --target runtime  -t kubeswarm/runtime:0.1.0 .
#   docker build --target operator -t kubeswarm/operator:0.1.0 .
# `make images` builds both (and the NATS and pause images) with docker, or with buildah/podman
# when there is no docker daemon: see docs/images.md. Each final stage is the Python base plus one
# virtualenv built by images/install.sh from a hashed lock: no compiler, no pip, no build backend.
# The runtime image carries neither kopf nor a Kubernetes client.
#
# Two bases work: the official image below, or a Debian one with python3 and python3-venv
# (`python3 -m images.build base` makes it where no registry is reachable). Hence `python3`
# everywhere, and no assumption that pip is installed in the base.

# Exact patch release and Debian suite; pin the digest as well where the build can resolve it:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY images/ images/
COPY runtime/ runtime/
COPY operator/ operator/

# Behind a TLS-intercepting proxy pip needs its CA: pass the bundle as a build secret and point
# pip at it, e.g. `--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt
# --build-arg PIP_CERT=/run/secrets/ca-bundle`. A secret is mounted for the RUN only, and an ARG
# of a build stage never reaches the final images.
FROM build AS runtime-venv
ARG PIP_CERT
RUN --mount=type=secret,id=ca-bundle images/install.sh runtime /opt/kubeswarm

FROM build AS operator-venv
ARG PIP_CERT
RUN --mount=type=secret,id=ca-bundle images/install.sh operator /opt/kubeswarm

# What both final images share: the base without pip and setuptools (installed in the official
# image, absent from the Debian one) nor the wheels ensurepip would install them from, an
# unprivileged user (the uid the operator's pod security context and the chart expect), the venv
# first on PATH (so `python` is the venv's even where the base only has `python3`).
FROM ${PYTHON_IMAGE} AS base
RUN if python3 -c 'import pip' 2>/dev/null; then python3 -m pip uninstall --yes --quiet pip setuptools wheel; fi \
    && rm -f /usr/local/lib/python3*/ensurepip/_bundled/*.whl /usr/share/python-wheels/*.whl \
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
