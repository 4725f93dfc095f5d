#!/bin/sh
# Redis service overlay.
#   Debian world:  apt-get install redis-server
#   FreeBSD world: pkg install redis
set -eu
if command -v apt-get >/dev/null 2>&1; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  apt-get update
  apt-get install -y --no-install-recommends redis-server
  rm -f /usr/sbin/policy-rc.d
  apt-get clean
  rm -rf /var/lib/apt/lists/*
elif command -v pkg >/dev/null 2>&1; then
  ASSUME_ALWAYS_YES=yes pkg install redis
  pkg clean -ay
else
  echo "no package manager (apt-get or pkg) to install redis with" >&2
  exit 1
fi
mkdir -p /usr/local/bin
cat > /usr/local/bin/lj-redis-start <<'SH'
#!/bin/sh
# Starts redis in the foreground on $PORT, persisting to $DATA_DIR; $PASSWORD is optional.
set -eu
PORT=${PORT:-6379}
DATA_DIR=${DATA_DIR:-/var/lib/lj/redis}
mkdir -p "$DATA_DIR"
chown redis:redis "$DATA_DIR"
set -- --port "$PORT" --bind 0.0.0.0 --protected-mode no --dir "$DATA_DIR" --appendonly yes --daemonize no --logfile ""
if [ -n "${PASSWORD:-}" ]; then set -- "$@" --requirepass "$PASSWORD"; fi
exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@"
SH
cat > /usr/local/bin/lj-redis-ready <<'SH'
#!/bin/sh
if [ -n "${PASSWORD:-}" ]; then export REDISCLI_AUTH="$PASSWORD"; fi
redis-cli -h "${HOST:-127.0.0.1}" -p "${PORT:-6379}" ping | grep -q PONG
SH
chmod 755 /usr/local/bin/lj-redis-start /usr/local/bin/lj-redis-ready
redis-server --version
