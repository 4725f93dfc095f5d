#!/bin/sh
# Installs /opt/lj/bin/lj-static-server (a small forking HTTP server for static files, in Perl) into the
# overlay. Perl comes from the world: perl-base on Debian (always present), pkg perl5 on
# FreeBSD.
set -eu
if ! command -v perl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends perl-base && apt-get clean && rm -rf /var/lib/apt/lists/*
  elif command -v pkg >/dev/null 2>&1; then
    ASSUME_ALWAYS_YES=yes pkg install perl5
  else
    echo "perl is missing and there is no package manager to install it" >&2
    exit 1
  fi
fi
# /opt/lj, not /usr/local: a host world shares the host's /usr read-only.
mkdir -p /opt/lj/bin
install -m 755 "$LJ_PLUGIN_DIR/server.pl" /opt/lj/bin/lj-static-server
echo "installed /opt/lj/bin/lj-static-server ($(perl -e 'print $^V'))"
