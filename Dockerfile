# The flow-run image for a Kubernetes or ACI work pool (deploy/prefect.kubernetes.yaml): the project at
# /opt/acr-transfer, its runtime dependencies from the committed uv.lock, no dev group and no stand-in extra.
#
#   docker build -t <registry>/acr-transfer:0.1.0 .
#
# Where no container registry can be reached (this project's machines), `make image` builds the same file on a
# Python base made locally with debootstrap: deploy/build-image.sh passes it as BASE_IMAGE.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# the uv that wrote uv.lock, from PyPI (no second registry needed for it)
ARG UV_VERSION=0.13.9
# UV_SYSTEM_CERTS: uv trusts the system's CA store (/etc/ssl/certs), as pip does, so a TLS-inspecting proxy's CA
# added there (or mounted there for the build) is honoured
ENV UV_COMPILE_BYTECODE=1 \
    UV_SYSTEM_CERTS=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_PROJECT_ENVIRONMENT=/opt/acr-transfer/.venv
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet "uv==${UV_VERSION}"
WORKDIR /opt/acr-transfer
# the dependencies first, in a layer that changes only with the lock
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --no-cache
# then the project itself (editable: the venv points at these sources, which are also what the deployments'
# entrypoints name, so there is one copy of the code)
COPY acr_transfer/ acr_transfer/
COPY tasks/ tasks/
COPY flows/ flows/
COPY deployments/ deployments/
COPY emulator/ emulator/
COPY prefect.yaml routes.example.yaml ./
COPY deploy/prefect.kubernetes.yaml deploy/
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-cache \
    && .venv/bin/acr-transfer --help >/dev/null

FROM ${BASE_IMAGE}
# a fixed, unprivileged user: Kubernetes' runAsNonRoot can check the numeric id
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/acr-transfer --shell /usr/sbin/nologin acr-transfer
COPY --from=build /opt/acr-transfer /opt/acr-transfer
ENV PATH=/opt/acr-transfer/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PREFECT_HOME=/home/acr-transfer/.prefect \
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30
# the working directory the deployments' pull step sets, so flows/routes.py:… entrypoints resolve here
WORKDIR /opt/acr-transfer
USER 10001:10001
# no ENTRYPOINT: the Kubernetes and ACI workers run `prefect flow-run execute` as the container's command
CMD ["acr-transfer", "--help"]
