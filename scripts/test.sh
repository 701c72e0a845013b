#!/usr/bin/env bash
# The README's test command: set up .venv, make sure PostgreSQL and RabbitMQ run, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k tenants -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh all
# docker-compose.yml is checked with `docker-compose config` (no engine needed); Debian ships it.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing docker-compose (Debian package) to validate docker-compose.yml" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1; }; } \
        || echo "test: could not install docker-compose; the compose check will be skipped" >&2
fi
if [ ! -d ../shared/data ]; then
    echo "test: ../shared/data is missing; the tests that need it will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
