#!/bin/sh
# Installs the app's dependencies into /app/node_modules (cached by its lockfile), dev
# dependencies included so the build step's tools (tsc, vite, next) are there; runs the
# package's build script; then prunes dev dependencies, so the slug carries what runs.
set -eu
export npm_config_cache="$LJ_CACHE_DIR/npm" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export COREPACK_HOME="$LJ_CACHE_DIR/corepack" COREPACK_ENABLE_DOWNLOAD_PROMPT=0
has_build() { node -e 'process.exit(require("./package.json").scripts?.build ? 0 : 1)'; }

if [ -f yarn.lock ]; then
  pm=yarn
elif [ -f pnpm-lock.yaml ]; then
  pm=pnpm
else
  pm=npm
fi

if [ "$LJ_CACHE_HIT" = 1 ] && [ -d node_modules ] && ! has_build; then
  echo "node_modules restored from the cache: install skipped"
else
  case "$pm" in
    yarn)
      # Yarn 2+ (a .yarnrc.yml) says --immutable; Yarn 1 --frozen-lockfile.
      if [ -f .yarnrc.yml ]; then corepack yarn install --immutable; else corepack yarn install --frozen-lockfile --production=false; fi
      ;;
    pnpm) corepack pnpm install --frozen-lockfile --prod=false ;;
    *)
      if [ -f package-lock.json ] || [ -f npm-shrinkwrap.json ]; then
        npm ci --include=dev --no-progress
      else
        npm install --include=dev --no-progress
      fi
      ;;
  esac
fi
if has_build; then
  case "$pm" in
    yarn) corepack yarn run build ;;
    pnpm) corepack pnpm run build ;;
    *) npm run build ;;
  esac
fi
# What runs needs no dev dependencies (yarn 1 has no prune: its install already honours NODE_ENV).
case "$pm" in
  pnpm) corepack pnpm prune --prod ;;
  npm) npm prune --omit=dev --no-progress ;;
esac
