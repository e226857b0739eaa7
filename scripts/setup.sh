#!/usr/bin/env bash
# Create/refresh the project venv at .venv (idempotent; seconds when nothing changed).
# Every version comes from constraints.txt (see its header for how to refresh it deliberately), so a
# fresh install gets exactly what the tests last passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.goodpoint-installed
# The stamp holds a hash of what decides the install: any change to these files re-runs it.
want=$(cat requirements.txt constraints.txt setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing requirements into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip -c constraints.txt
  .venv/bin/python -m pip install -q -r requirements.txt -c constraints.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
