#!/bin/sh
# Creates /app/.venv and installs the app's requirements (cached by requirements.txt).
set -eu
# A version the app asks for (.python-version, runtime.txt "python-3.11.4") must be the world's:
# Python comes from the world's package manager, which offers one (Debian bookworm: 3.11).
want=""
if [ -f .python-version ]; then want=$(head -n1 .python-version | tr -d '[:space:]'); fi
if [ -z "$want" ] && [ -f runtime.txt ]; then want=$(head -n1 runtime.txt | tr -d '[:space:]' | sed 's/^python-//'); fi
have=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case "$have." in
  "$want".*|"$want") ;;
  *) if [ -n "$want" ]; then
       echo "the app asks for Python $want; this world offers Python $have only (its python3): ask for ${have%.*}, or use a world with $want" >&2
       exit 1
     fi ;;
esac
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
