# The code location image: the pinned stack, the project without dev tools, the k8s extra (the
# Kubernetes run launcher's library, for runs launched as Kubernetes jobs from this image), the
# dbt manifest prepared at build. It serves the code location over gRPC on port 4000 as a
# non-root user; docker-compose.yaml runs the webserver and the daemon from it too, and the Helm
# chart's user deployment runs it (deploy/helm/values.yaml). Build: docker build -t
# ghcr.io/illuma-com/illuma-pipelines:0.1.0 .
FROM python:3.11-slim

LABEL org.opencontainers.image.title="illuma-pipelines" \
      org.opencontainers.image.version="0.1.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    ILLUMA_ENV=production \
    ILLUMA_VAR_DIR=/opt/illuma/var

WORKDIR /opt/illuma

# Dependencies first (a layer that changes only with pyproject.toml or constraints.txt).
COPY pyproject.toml constraints.txt ./
COPY illuma_pipelines/__init__.py illuma_pipelines/__init__.py
RUN pip install -c constraints.txt ".[k8s]" && pip uninstall -y illuma-pipelines

# The project itself, in place (editable, so its paths resolve to /opt/illuma: dbt_project/,
# deploy/), without the dev extras.
COPY illuma_pipelines ./illuma_pipelines
COPY assets ./assets
COPY resources ./resources
COPY sensors ./sensors
COPY dbt_project ./dbt_project
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
RUN pip install --no-deps -c constraints.txt -e . \
    && cd dbt_project && dbt parse --profiles-dir . --quiet \
    && test -s target/manifest.json

# Non-root; dbt writes its target/ and logs/, the pipeline its var/ (keys and the inbox are
# mounted volumes given by ILLUMA_KEY_STORE_PATH and ILLUMA_INBOX_ROOT).
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin illuma \
    && mkdir -p /opt/illuma/var \
    && chown -R illuma:illuma /opt/illuma/var /opt/illuma/dbt_project /opt/dagster/dagster_home
USER 10001

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "illuma_pipelines.definitions", "--location-name", "illuma_pipelines"]
