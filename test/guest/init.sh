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
# LJ_GUEST_WATCH=N: every N seconds, what runs and where it waits (for a guest that hangs).
if [ -n "${LJ_GUEST_WATCH:-}" ]; then
  (
    while sleep "$LJ_GUEST_WATCH"; do
      echo "lj-guest-watch: $(cut -d' ' -f1 /proc/uptime) s"
      ps -eo pid,ppid,stat,etime,wchan:24,args --sort=pid | grep -v ' \[.*\]$' | cut -c1-200
      for s in /proc/[0-9]*/stat; do
        read -r pid _ state _ <"$s" 2>/dev/null && [ "$state" = D ] && { echo "stack of $pid:"; cat "/proc/$pid/stack"; }
      done 2>/dev/null
    done
  ) &
fi
sh /lj/guest/cmd
echo "lj-guest-status: $?"
cd /
sync
umount /lj 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 30
