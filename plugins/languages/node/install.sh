#!/bin/sh
# Node.js runtime overlay. Runtimes come from the world's package manager:
#   Debian world:  apt-get install nodejs npm
#   FreeBSD world: pkg install node npm
# A world that already has node and npm (a host world sharing /usr) needs nothing.
set -eu
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "node $(node --version) and npm $(npm --version) are already in the world: nothing to install"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends nodejs npm ca-certificates
  apt-get clean
  rm -rf /var/lib/apt/lists/*
elif command -v pkg >/dev/null 2>&1; then
  ASSUME_ALWAYS_YES=yes pkg install node npm
  pkg clean -ay
else
  echo "no package manager (apt-get or pkg) to install node with" >&2
  exit 1
fi
node --version
