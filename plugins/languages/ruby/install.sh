#!/bin/sh
# Ruby runtime overlay, from the world's package manager:
#   Debian world:  apt-get install ruby bundler
#   FreeBSD world: pkg install ruby rubygem-bundler
# A world that already has ruby and bundle needs nothing.
set -eu
if command -v ruby >/dev/null 2>&1 && command -v bundle >/dev/null 2>&1; then
  echo "$(ruby --version) and bundler are already in the world: nothing to install"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends ruby bundler ca-certificates
  apt-get clean
  rm -rf /var/lib/apt/lists/*
elif command -v pkg >/dev/null 2>&1; then
  ASSUME_ALWAYS_YES=yes pkg install ruby rubygem-bundler
  pkg clean -ay
else
  echo "no package manager (apt-get or pkg) to install ruby with; on a host world install ruby on the host" >&2
  exit 1
fi
ruby --version
bundle --version
