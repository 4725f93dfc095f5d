#!/bin/sh
# Installs the app's gems into /app/vendor/bundle (cached by Gemfile.lock). An app whose
# Gemfile lists no gems (or has no Gemfile) needs no network at all.
set -eu
if [ ! -f Gemfile ]; then
  echo "no Gemfile: nothing to install"
  exit 0
fi
if ! grep -Eq '^[[:space:]]*(gem|gemspec)[[:space:]]' Gemfile; then
  echo "Gemfile lists no gems: nothing to install (offline build)"
  exit 0
fi
if [ "$LJ_CACHE_HIT" = 1 ] && [ -d vendor/bundle ]; then
  echo "vendor/bundle restored from the cache"
fi
bundle config set --local path vendor/bundle
bundle config set --local without 'development test'
if [ -f Gemfile.lock ]; then bundle config set --local deployment true; fi
bundle install --jobs 4
