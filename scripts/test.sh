#!/usr/bin/env bash
# The README's test command: set up .venv, make sure PostgreSQL and RabbitMQ run, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k tenants -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh all
if [ ! -d ../shared/data ]; then
    echo "test: ../shared/data is missing; the tests that need it will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
