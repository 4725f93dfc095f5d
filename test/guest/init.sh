#!/bin/sh
# The cgroup v2 guest's init (pid 1), run from the payload disk by the image's stub
# (test/guest/stub-init): it sets up what a systemd host would (cgroup2 at /sys/fs/cgroup with
# the same options, this process in a leaf cgroup, loopback up), runs the command from the
# host, prints its status as "lj-guest-status: N" (scripts/cgroup2-guest.sh reads that), and
# powers the machine off.
export PATH=/lj/repo/.tools/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
# Like systemd, keep processes out of the root cgroup: the tests then move jails out of a leaf.
mkdir -p /sys/fs/cgroup/init.scope
echo $$ >/sys/fs/cgroup/init.scope/cgroup.procs
hostname lj-guest
ip link set lo up
. /lj/guest/env
echo "lj-guest: up after $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)," \
  "cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)," \
  "v1 hierarchies mounted: $(grep -c ' - cgroup ' /proc/self/mountinfo)"
cd /lj/repo || exit 1
# When the command prints nothing for LJ_GUEST_STALL seconds (default 300), what runs and where
# it waits goes to the console: a hang in CI then says where it is.
out=/run/lj-guest-out
: >"$out"
(
  stall=${LJ_GUEST_STALL:-300} last=-1 quiet=0
  while sleep 30; do
    size=$(stat -c %s "$out")
    if [ "$size" != "$last" ]; then last=$size quiet=0; continue; fi
    quiet=$((quiet + 30))
    [ "$quiet" -ge "$stall" ] || continue
    quiet=0
    echo "lj-guest-stall: no output for $stall s (uptime $(cut -d' ' -f1 /proc/uptime) s); processes:"
    ps -eo pid,ppid,stat,etime,wchan:24,args --sort=pid | grep -v ' \[.*\]$' | cut -c1-200
    for p in /proc/[0-9]*; do
      case $(cut -d' ' -f3 "$p/stat" 2>/dev/null) in D | R) echo "kernel stack of ${p#/proc/}:"; cat "$p/stack" 2>/dev/null ;; esac
    done
  done
) &
watcher=$!
# The output goes to the console (for the host) and to $out (for the watcher).
status_file=/run/lj-guest-status
{ sh /lj/guest/cmd; echo $? >"$status_file"; } 2>&1 | tee "$out"
kill "$watcher" 2>/dev/null
echo "lj-guest-status: $(cat "$status_file" 2>/dev/null || echo 126)"
cd /
sync
umount /lj 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 30
