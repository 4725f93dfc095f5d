#!/bin/sh
# Creates /app/.venv and installs the app's requirements (cached by requirements.txt).
set -eu
export PIP_CACHE_DIR="$LJ_CACHE_DIR/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [ "$LJ_CACHE_HIT" = 1 ] && [ -x .venv/bin/python ]; then
  echo ".venv restored from the cache: pip install skipped"
  exit 0
fi
python3 -m venv .venv
if [ -f requirements.txt ]; then
  .venv/bin/pip install --no-input -r requirements.txt
elif [ -f pyproject.toml ] || [ -f setup.py ]; then
  .venv/bin/pip install --no-input .
fi
