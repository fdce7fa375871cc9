# ragwatch API image: slim base, non-root user, liveness healthcheck.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RAGWATCH_HOST=0.0.0.0 RAGWATCH_PORT=8000 RAGWATCH_DATA_DIR=/var/lib/ragwatch

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY service ./service
COPY telemetry ./telemetry
# Exactly the versions uv.lock pins (hash-checked), then the project itself without resolving anything again.
RUN pip install uv==0.13.9 \
 && uv export --frozen --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
 && pip install --require-hashes -r /tmp/requirements.txt \
 && pip install --no-deps . \
 && pip uninstall --yes uv && rm /tmp/requirements.txt \
 && useradd --system --uid 10001 --home-dir /var/lib/ragwatch --create-home ragwatch

USER ragwatch
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"
ENTRYPOINT ["ragwatch"]
CMD ["serve"]
