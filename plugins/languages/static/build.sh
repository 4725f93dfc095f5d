#!/bin/sh
# Static sites need no build; a site in public/ or dist/ is served from there.
set -eu
root=.
for d in dist public; do
  if [ -f "$d/index.html" ]; then root=$d; break; fi
done
echo "$root" > .lj-static-root
echo "serving $(find "$root" -type f | wc -l) files from /app/$root"
