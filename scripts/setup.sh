#!/usr/bin/env bash
# Set up triage on a new machine: system packages + a virtualenv in .venv with the package installed.
#   scripts/setup.sh          # serving (triage serve / call / replay / classify / demo)
#   scripts/setup.sh dev      # + tests and training (pytest, TensorFlow, Chromium, ...)
#   scripts/setup.sh train    # + the voices and recordings needed to retrain the models
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-serve}"
case "$purpose" in
  serve) system=serve; extras="mic" ;;
  dev) system=test; extras="mic,dev,train" ;;
  train) system=train; extras="mic,dev,train" ;;
  *) echo "usage: $0 [serve|dev|train]" >&2; exit 2 ;;
esac
bash scripts/install-system.sh "$system"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -e ".[$extras]" >&2
echo "triage is installed in .venv ($purpose)" >&2
