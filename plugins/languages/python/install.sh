#!/bin/sh
# Python runtime overlay. Debian world: apt-get install python3 python3-venv python3-pip;
# FreeBSD world: pkg install python3 (and py3XX-pip). Nothing to do when the world has
# python3 with the venv module already (a host world sharing /usr).
set -eu
if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "$(python3 --version) with venv is already in the world: nothing to install"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates
  apt-get clean
  rm -rf /var/lib/apt/lists/*
elif command -v pkg >/dev/null 2>&1; then
  ASSUME_ALWAYS_YES=yes pkg install python3
  pkg clean -ay
else
  echo "no package manager (apt-get or pkg) to install python with" >&2
  exit 1
fi
python3 --version
