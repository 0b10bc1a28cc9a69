# syntax=docker/dockerfile:1
# Boltorezka images, built from the lock files and the wheel (tools/install-release.sh):
#   docker build -t boltorezka .               # the API node: `boltorezka serve`
#   docker build --target sfu -t boltorezka-sfu .   # the SFU media process: `boltorezka sfu`
# Neither carries the embedded PostgreSQL or a compiler; the API image has no media stack.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY requirements/ requirements/
COPY tools/install-release.sh tools/
COPY boltorezka/ boltorezka/

FROM source AS install-server
RUN tools/install-release.sh /opt/boltorezka requirements/server.txt

FROM source AS install-sfu
RUN tools/install-release.sh /opt/boltorezka requirements/sfu.txt

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 boltorezka \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/boltorezka boltorezka \
    && install -d -o 10001 -g 10001 /var/lib/boltorezka
ENV PATH=/opt/boltorezka/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    BOLTOREZKA_HOST=0.0.0.0 \
    BOLTOREZKA_DATA_DIR=/var/lib/boltorezka
USER 10001:10001
WORKDIR /var/lib/boltorezka

FROM runtime AS sfu
COPY --from=install-sfu /opt/boltorezka /opt/boltorezka
CMD ["boltorezka", "sfu"]

# The last stage is the default target: the API node.
FROM runtime AS server
COPY --from=install-server /opt/boltorezka /opt/boltorezka
EXPOSE 8080
# Liveness only: /readyz turns 503 while draining, which must not get the container killed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["boltorezka", "serve"]
