#!/usr/bin/env bash
# Install what the tests need, then run the whole default test suite (slow training runs excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m pytest -q "$@"
