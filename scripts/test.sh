#!/usr/bin/env bash
# The README's test command: set up .venv, make sure PostgreSQL and RabbitMQ run, run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k tenants -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh all
# Headless Chromium for the browser tests (tests/bot/test_admin_browser.py): Debian's browser and its
# driver, never a browser download. Without them those tests skip and say so.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test: installing chromium and chromium-driver from Debian packages (browser tests)" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
            || echo "test: could not install chromium; the browser tests will be skipped" >&2
    else
        echo "test: chromium/chromedriver missing; the browser tests will be skipped" \
             "(install them with: sudo apt-get install chromium chromium-driver)" >&2
    fi
fi
# docker-compose.yml is checked with `docker-compose config` (no engine needed); Debian ships it.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing docker-compose (Debian package) to validate docker-compose.yml" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1; }; } \
        || echo "test: could not install docker-compose; the compose check will be skipped" >&2
fi
# docs/architecture.svg is checked against what graphviz renders from docs/architecture.dot.
if ! command -v dot >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing graphviz (Debian package) to check docs/architecture.svg" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null 2>&1; }; } \
        || echo "test: could not install graphviz; the diagram check will be skipped" >&2
fi
if [ ! -d ../shared/data ]; then
    echo "test: ../shared/data is missing; the tests that need it will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
