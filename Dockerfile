# One image for every Parley process; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PARLEY_DATA_DIR=/data
WORKDIR /app

COPY pyproject.toml README.md ./
COPY parley ./parley
COPY tenants ./tenants
COPY knowledge ./knowledge
COPY bot ./bot
COPY retrieval ./retrieval
COPY ingestion ./ingestion
COPY integrations ./integrations
COPY cli ./cli
COPY alembic ./alembic
COPY alembic.ini ./
RUN pip install -e . && useradd --system --home /data parley && mkdir -p /data && chown parley /data

USER parley
VOLUME ["/data"]
EXPOSE 8080 8081
ENTRYPOINT ["parley"]
CMD ["--help"]
