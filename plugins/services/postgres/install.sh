#!/bin/sh
# PostgreSQL service overlay.
#   Debian world:  apt-get install postgresql (no cluster is created; the start command
#                  initialises $DATA_DIR itself on first start)
#   FreeBSD world: pkg install postgresql15-server (user postgres, binaries in /usr/local/bin)
set -eu
if command -v apt-get >/dev/null 2>&1; then
  # Package scripts must not start daemons inside the build jail.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  apt-get update
  apt-get install -y --no-install-recommends postgresql-common
  sed -ri 's/^#?[[:space:]]*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
  apt-get install -y --no-install-recommends postgresql
  rm -f /usr/sbin/policy-rc.d
  apt-get clean
  rm -rf /var/lib/apt/lists/*
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
elif command -v pkg >/dev/null 2>&1; then
  ASSUME_ALWAYS_YES=yes pkg install postgresql15-server
  pkg clean -ay
  PGBIN=/usr/local/bin
else
  echo "no package manager (apt-get or pkg) to install postgres with" >&2
  exit 1
fi
mkdir -p /usr/local/bin
cat > /usr/local/bin/lj-postgres-start <<SH
#!/bin/sh
# Starts PostgreSQL in the foreground on \$PORT with its data in \$DATA_DIR.
# \$PASSWORD (optional) becomes the postgres user's password; without one, local trust.
set -eu
PGBIN=$PGBIN
PORT=\${PORT:-5432}
DATA_DIR=\${DATA_DIR:-/var/lib/lj/postgres}
mkdir -p "\$DATA_DIR"
chown postgres:postgres "\$DATA_DIR"
chmod 700 "\$DATA_DIR"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "\$@"; }
if [ ! -s "\$DATA_DIR/PG_VERSION" ]; then
  pw=\$(mktemp)
  printf '%s\n' "\${PASSWORD:-postgres}" > "\$pw"
  chown postgres "\$pw"
  as_pg "\$PGBIN/initdb" -D "\$DATA_DIR" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 --pwfile="\$pw"
  rm -f "\$pw"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "\$DATA_DIR/pg_hba.conf"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "\$PGBIN/postgres" -D "\$DATA_DIR" -p "\$PORT" -k /tmp -c listen_addresses='*'
SH
cat > /usr/local/bin/lj-postgres-ready <<SH
#!/bin/sh
exec $PGBIN/pg_isready -q -h "\${HOST:-127.0.0.1}" -p "\${PORT:-5432}"
SH
chmod 755 /usr/local/bin/lj-postgres-start /usr/local/bin/lj-postgres-ready
"$PGBIN/postgres" --version
