#!/usr/bin/env bash
# Render the architecture diagram the README embeds: docs/architecture.dot -> docs/architecture.svg.
# Needs graphviz (`apt-get install graphviz`). tests/test_docs.py checks the committed svg is current.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null 2>&1; then
    echo "diagram: graphviz's dot is not installed (e.g. sudo apt-get install graphviz)" >&2
    exit 1
fi
dot -Tsvg docs/architecture.dot -o docs/architecture.svg
echo "diagram: wrote docs/architecture.svg"
