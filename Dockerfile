# syntax=docker/dockerfile:1
# The Canaria operator image:  docker build -t canaria:0.1.0 .
#
# - The base image is pinned by version tag (pin it by digest too in your registry mirror if you can):
#   its Python minor version must be the one requirements.lock was resolved for (see the lock's header).
# - Dependencies come only from requirements.lock (the runtime closure, exact versions, no resolution at
#   build time); the package itself is built from source and installed without dependencies; `pip check`
#   proves the lock is complete; then pip and setuptools (the venv's seed) leave: the runtime holds the
#   locked distributions and Canaria, nothing else.
# - It runs as a numeric non-root user and writes nothing outside /tmp, so it works with
#   readOnlyRootFilesystem and an emptyDir at /tmp (as the Helm chart and manifests/ mount it).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SETUPTOOLS_VERSION=80.9.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
# The runtime environment: the locked dependencies only.
RUN python -m venv /opt/canaria
COPY requirements.lock /src/requirements.lock
RUN /opt/canaria/bin/pip install --no-cache-dir --no-deps -r /src/requirements.lock
# The package: built in a separate venv with a pinned build backend, so nothing else enters /opt/canaria.
COPY . /src
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels /src \
    && /opt/canaria/bin/pip install --no-cache-dir --no-deps /wheels/canaria-*.whl \
    && /opt/canaria/bin/pip check \
    && /opt/canaria/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="canaria" \
      org.opencontainers.image.description="Kubernetes operator: canary rollouts of ML model versions, gated by Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME and TMPDIR on /tmp: the only writable place when the root filesystem is read-only.
# No bytecode writes at run time (it was compiled at install time).
ENV PATH=/opt/canaria/bin:${PATH} \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/canaria /opt/canaria
WORKDIR /tmp
USER 65532:65532
# kopf liveness (/healthz) and Prometheus metrics (/metrics), the defaults of `canaria run`.
EXPOSE 8080 9464
ENTRYPOINT ["canaria", "run"]
