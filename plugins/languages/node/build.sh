#!/bin/sh
# Installs the app's npm dependencies into /app/node_modules (cached by package-lock.json).
set -eu
export npm_config_cache="$LJ_CACHE_DIR/npm" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
if [ "$LJ_CACHE_HIT" = 1 ] && [ -d node_modules ]; then
  echo "node_modules restored from the cache: npm install skipped"
elif [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
  npm ci --omit=dev --no-progress
else
  npm install --omit=dev --no-progress
fi
if node -e 'process.exit(require("./package.json").scripts?.build ? 0 : 1)'; then
  npm run build
fi
