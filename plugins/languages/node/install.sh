#!/bin/sh
# Node.js runtime overlay. Runtimes come from the world's package manager:
#   Debian world:  apt-get install nodejs npm
#   FreeBSD world: pkg install node npm
# A world that already has node and npm (a host world sharing /usr) needs nothing.
# A requested version (package.json engines.node, .nvmrc, .node-version) is an overlay of its
# own: the official build from the npm registry and npm 10, fetched and verified by lightjail
# (/tmp/lj/files), unpacked under /opt/lj/node.
set -eu
if [ -n "${LJ_RUNTIME_VERSION:-}" ]; then
  mkdir -p /opt/lj/node/lib/node_modules/npm
  tar -xzf /tmp/lj/files/node.tgz -C /opt/lj/node --strip-components=1 --no-same-owner
  tar -xzf /tmp/lj/files/npm.tgz -C /opt/lj/node/lib/node_modules/npm --strip-components=1 --no-same-owner
  chmod 755 /opt/lj/node/lib/node_modules/npm/bin/npm-cli.js /opt/lj/node/lib/node_modules/npm/bin/npx-cli.js
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js /opt/lj/node/bin/npm
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js /opt/lj/node/bin/npx
  rm -rf /opt/lj/node/include /opt/lj/node/share
  echo "node $(/opt/lj/node/bin/node --version) with npm $LJ_NPM_VERSION in /opt/lj/node"
  exit 0
fi
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
