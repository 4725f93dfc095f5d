#!/bin/sh
# Installs the app's gems into /app/vendor/bundle (cached by Gemfile.lock). An app whose
# Gemfile lists no gems (or has no Gemfile) needs no network at all.
set -eu
# A version the app asks for (.ruby-version, Gemfile's ruby "x.y") must be the world's: Ruby
# comes from the world's package manager, which offers one (Debian bookworm: 3.1).
want=""
if [ -f .ruby-version ]; then want=$(head -n1 .ruby-version | tr -d '[:space:]' | sed 's/^ruby-//'); fi
if [ -z "$want" ] && [ -f Gemfile ]; then
  want=$(sed -n "s/^[[:space:]]*ruby[[:space:]]*['\"]\([0-9][0-9.]*\)['\"].*/\1/p" Gemfile | head -n1)
fi
have=$(ruby -e 'print RUBY_VERSION')
case "$have." in
  "$want".*|"$want") ;;
  *) if [ -n "$want" ]; then
       echo "the app asks for Ruby $want; this world offers Ruby $have only (its ruby): ask for ${have%.*}, or use a world with $want" >&2
       exit 1
     fi ;;
esac
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
