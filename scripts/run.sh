#!/usr/bin/env bash
# The README's run command: set up .venv and start the whole platform on its embedded defaults
# (SQLite under the checkout's var/, local blobs, local index and model, offline answerer). RabbitMQ
# is the one service the multi-process platform needs; it is started (or installed) when missing.
# Settings: the environment, then the checkout's .env (or the file PARLEY_ENV_FILE names), then
# the defaults; `parley up` prints which, and where the data directory is, as its first line.
# Extra arguments go to `parley up` (e.g. scripts/run.sh --single-process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
case " $* " in
    *" --single-process "*) ;;
    *) bash scripts/services.sh rabbitmq || echo "run: RabbitMQ is not available; try: scripts/run.sh --single-process" >&2 ;;
esac
exec .venv/bin/parley up "$@"
