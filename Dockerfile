# Boltorezka server image: `boltorezka serve` by default, `boltorezka sfu` for media hosts.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY boltorezka ./boltorezka
COPY migrations ./migrations
COPY protocol ./protocol
RUN pip install --no-cache-dir -e . \
    && useradd --system --home /var/lib/boltorezka boltorezka \
    && mkdir -p /var/lib/boltorezka && chown boltorezka /var/lib/boltorezka
USER boltorezka
ENV BOLTOREZKA_HOST=0.0.0.0 BOLTOREZKA_DATA_DIR=/var/lib/boltorezka
EXPOSE 8080
CMD ["boltorezka", "serve"]
