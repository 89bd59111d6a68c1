# db-exporter: a small image that runs `db-exporter serve` as an unprivileged user.
# Build: docker build -t db-exporter .
# Run:   docker run -p 9188:9188 -e DATABASE_URL=postgresql://... db-exporter
#        (or DATA_SOURCE_NAME, DB_EXPORTER_* variables, *_FILE secrets: README, configuration
#        from the environment); with a file: ... db-exporter serve --config /etc/db-exporter/exporter.yaml
# With TLS (a web-config file), set HEALTHCHECK_URL=https://127.0.0.1:9188/healthz.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
# The package's links (exporter/demo/models, exporter/demo/migrations, exporter/assets/*) point
# at these folders: the wheel carries copies of them.
COPY exporter ./exporter
COPY models ./models
COPY alembic ./alembic
COPY dashboards ./dashboards
COPY config ./config
COPY docs ./docs
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:9188/healthz
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin exporter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config/exporter.yaml /etc/db-exporter/exporter.yaml
# Numeric, so that runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9188
# /healthz stays open when basic auth is on; the certificate is not checked (loopback).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=2, context=ssl._create_unverified_context())"]
ENTRYPOINT ["db-exporter"]
# From the environment alone, as postgres_exporter's image: the documented file above lists a
# database of its own, which would shadow DATA_SOURCE_NAME.
CMD ["serve"]
