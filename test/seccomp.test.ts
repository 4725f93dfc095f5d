/**
 * The seccomp allow-list, in real jails over a host world: what it refuses (each refusal checked
 * against a control jail without the filter, where the same call succeeds, so the refusal is the
 * filter's and not the kernel's) and that ordinary programs still run under it.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runJail } from "../src/jail/spawn.ts";
import { BUILD_CAPS, type JailSpec } from "../src/jail/spec.ts";
import { type JailEnv, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;

beforeAll(async () => {
  if (!isRoot()) return;
  env = await makeJailEnv();
});
afterAll(() => env?.cleanup());

const jail = (argv: string[], extra: Partial<JailSpec> = {}) =>
  runJail({ ...env.base, argv, env: { PATH: "/usr/bin:/bin", HOME: "/tmp" }, ...extra });

const EPERM = 1;
const EOPNOTSUPP = 95;
const EAFNOSUPPORT = 97;
const EPROTONOSUPPORT = 93;

/** Syscall numbers the probe calls through ctypes (the generic table's on aarch64). */
const NR = {
  pidfd_open: 434,
  pidfd_getfd: 438,
  process_madvise: 440,
  memfd_secret: 447,
  ...(process.arch === "arm64"
    ? { kcmp: 272, set_mempolicy: 237, mbind: 235, personality: 92 }
    : { kcmp: 312, set_mempolicy: 238, mbind: 237, personality: 135 }),
};

/**
 * Makes each refused call and prints `name errno` (0: it worked). Sockets through Python's socket
 * module, the rest through libc's syscall(); MADV_COLD and MPOL_DEFAULT change nothing.
 */
const probe = `
import ctypes, mmap, os, socket
NR = ${JSON.stringify(NR)}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) for a in args])
    return r, (ctypes.get_errno() if r < 0 else 0)
def sock(name, *a):
    try:
        socket.socket(*a).close(); print(name, 0)
    except OSError as e: print(name, e.errno)
def pair(name, family):
    try:
        for s in socket.socketpair(family, socket.SOCK_STREAM): s.close()
        print(name, 0)
    except OSError as e: print(name, e.errno)
sock("vsock", 40, socket.SOCK_STREAM)
sock("packet", 17, socket.SOCK_RAW, 0x0300)
sock("inet-raw", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock("inet6-raw-nonblock-cloexec", socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 58)
sock("inet-sock-packet", socket.AF_INET, 10, 0x0300)
sock("netlink-audit", socket.AF_NETLINK, socket.SOCK_RAW, 9)
pair("socketpair-vsock", 40)
print("personality-addr-no-randomize", sc("personality", 0x0040000)[1])
pid = os.getpid()
print("kcmp", sc("kcmp", pid, pid, 0, 0, 0)[1])
pidfd, _ = sc("pidfd_open", pid, 0)
print("pidfd_getfd", sc("pidfd_getfd", pidfd, 0, 0)[1])
print("process_madvise", sc("process_madvise", pidfd, 0, 0, 20, 0)[1])
print("memfd_secret", sc("memfd_secret", 0)[1])
print("set_mempolicy", sc("set_mempolicy", 0, 0, 0)[1])
m = mmap.mmap(-1, 4096)
print("mbind", sc("mbind", ctypes.addressof(ctypes.c_char.from_buffer(m)), 4096, 0, 0, 0, 0)[1])
`;

/** What the filter answers to each of the probe's calls. */
const refusals: Record<string, number> = {
  vsock: EAFNOSUPPORT,
  packet: EAFNOSUPPORT,
  "inet-raw": EPERM,
  "inet6-raw-nonblock-cloexec": EPERM,
  "inet-sock-packet": EPERM,
  "netlink-audit": EPROTONOSUPPORT,
  "socketpair-vsock": EOPNOTSUPP,
  "personality-addr-no-randomize": EPERM,
  kcmp: EPERM,
  pidfd_getfd: EPERM,
  process_madvise: EPERM,
  memfd_secret: EPERM,
  set_mempolicy: EPERM,
  mbind: EPERM,
};

function parse(stdout: string): Record<string, number> {
  const pairs = stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ") as [string, string]);
  return Object.fromEntries(pairs.map(([k, v]) => [k, Number(v)]));
}

describe("seccomp allow-list", () => {
  rootTest("refuses vsock, packet and raw sockets, personality flags and cross-process calls", async () => {
    // CAP_NET_RAW, so that without the filter packet and raw sockets would be allowed.
    const spec: Partial<JailSpec> = { caps: ["NET_RAW"] };
    const filtered = await jail(["/usr/bin/python3", "-c", probe], spec);
    expect(filtered.stderr).toBe("");
    expect(parse(filtered.stdout)).toEqual(refusals);

    // The same calls succeed in a jail without the filter (socketpair excepted: vsock has
    // no pairs, but the kernel makes the socket before it says so).
    const control = await jail(["/usr/bin/python3", "-c", probe], { ...spec, seccomp: false });
    expect(control.stderr).toBe("");
    const unfiltered = parse(control.stdout);
    for (const name of Object.keys(refusals)) {
      if (name === "socketpair-vsock") expect(unfiltered[name]).toBe(EOPNOTSUPP);
      else expect({ name, errno: unfiltered[name] }).toEqual({ name, errno: 0 });
    }
  });

  rootTest("allows what ordinary programs do: sockets, netlink route, fork, exec, threads", async () => {
    const script = `
import ctypes, os, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print("personality-query", libc.syscall(ctypes.c_long(${NR.personality}), ctypes.c_long(0xffffffff)) >= 0)
print("personality-linux", libc.syscall(ctypes.c_long(${NR.personality}), ctypes.c_long(0)) >= 0)
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
srv.bind(("127.0.0.1", 0)); srv.listen()
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
cli.sendall(b"tcp"); print("tcp", conn.recv(3).decode())
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); u.bind("/tmp/s.sock"); u.listen()
c = socket.socket(socket.AF_UNIX); c.connect("/tmp/s.sock"); a, _ = u.accept()
c.sendall(b"unix"); print("unix", a.recv(4).decode())
p, q = socket.socketpair(); p.sendall(b"pair"); print("pair", q.recv(4).decode())
d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); d.close(); print("udp6", "ok")
print("ifaces", "lo" in [n for _, n in socket.if_nameindex()])
out = []
t = threading.Thread(target=lambda: out.append(threading.get_native_id())); t.start(); t.join()
print("thread", out[0] != os.getpid())
pid = os.fork()
if pid == 0: os.execv("/bin/sh", ["sh", "-c", "exit 7"])
print("fork-exec", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("subprocess", subprocess.run(["sh", "-c", "echo $((6*7)) | cat"], capture_output=True, text=True).stdout.strip())
`;
    const r = await jail(["/usr/bin/python3", "-c", script]);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim().split("\n")).toEqual([
      "personality-query True",
      "personality-linux True",
      "tcp tcp",
      "unix unix",
      "pair pair",
      "udp6 ok",
      "ifaces True",
      "thread True",
      "fork-exec 7",
      "subprocess 42",
    ]);
    const sh = await jail(["/bin/sh", "-c", "x=$(echo hi | tr a-z A-Z); (sleep 0.01 &) ; wait; echo $x"]);
    expect(sh.stdout).toBe("HI\n");
  });

  rootTest("node, git and redis run under it", async () => {
    const node = await jail([
      "/usr/bin/node",
      "-e",
      `const net = require("node:net"); const { Worker } = require("node:worker_threads");
       const { execFileSync } = require("node:child_process");
       new Worker("require('node:worker_threads').parentPort.postMessage(2)", { eval: true }).on("message", (w) => {
         const srv = net.createServer((s) => s.end("net")).listen(0, "127.0.0.1", () => {
           net.connect(srv.address().port, "127.0.0.1").on("data", (d) => {
             console.log(w, d.toString(), execFileSync("sh", ["-c", "echo child"]).toString().trim());
             srv.close();
           });
         });
       });`,
    ]);
    expect(node.stderr).toBe("");
    expect(node.stdout).toBe("2 net child\n");

    const git = await jail([
      "/bin/sh",
      "-c",
      "cd /tmp && git init -q r && cd r && echo a > f && git add f && git -c user.name=t -c user.email=t@t commit -qm m && git log --format=%s",
    ]);
    expect(git.stderr).toBe("");
    expect(git.stdout).toBe("m\n");

    const redis = await jail(
      [
        "/bin/sh",
        "-c",
        "redis-server --port 6390 --bind 127.0.0.1 --save '' --dir /tmp --daemonize yes >/dev/null && " +
          "for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p 6390 ping 2>/dev/null && break; sleep 0.2; done; " +
          "redis-cli -p 6390 set k v >/dev/null && redis-cli -p 6390 get k",
      ],
      { uid: 65534, gid: 65534 },
    );
    expect(redis.stdout).toBe("PONG\nv\n");
  });

  rootTest(
    "apt and dpkg, as root with the build capabilities, install a package that adds a user",
    async () => {
      // A local package (no network): its postinst adds a system user (useradd talks to the
      // audit netlink, refused as absent) and chowns a file to it.
      const script = `set -e
mkdir -p /tmp/p/DEBIAN /tmp/p/opt/ljx /var/lib/dpkg/updates /var/lib/dpkg/info /var/lib/apt/lists/partial /var/cache/apt/archives/partial /var/log/apt
touch /var/lib/dpkg/status; echo hi > /tmp/p/opt/ljx/f
printf 'Package: ljx\\nVersion: 1\\nArchitecture: all\\nMaintainer: t <t@t>\\nDescription: t\\n' > /tmp/p/DEBIAN/control
printf '#!/bin/sh\\nset -e\\nuseradd -r -M -s /bin/false ljsvc\\nchown ljsvc /opt/ljx/f\\n' > /tmp/p/DEBIAN/postinst
chmod 755 /tmp/p/DEBIAN/postinst
dpkg-deb --build /tmp/p /tmp/ljx.deb >/dev/null
apt-get install -y -q /tmp/ljx.deb >/dev/null 2>&1
stat -c %U /opt/ljx/f; dpkg-query -W -f '\${Status}\\n' ljx`;
      // As an overlay build runs it: over a host world the host's package database is a
      // layered mount, written to the build's upper layer.
      const upper = mkdtempSync(join(tmpdir(), "lj-seccomp-upper-"));
      const r = await jail(["/bin/sh", "-c", script], {
        upper: join(upper, "u"),
        caps: BUILD_CAPS,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root" },
      });
      rmSync(upper, { recursive: true, force: true });
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("ljsvc\ninstall ok installed\n");
    },
  );

  rootTest("postgres initialises and answers a query (System V and POSIX shared memory)", async () => {
    const bin = readdirSync("/usr/lib/postgresql").map((v) => `/usr/lib/postgresql/${v}/bin`)[0];
    expect(bin).toBeDefined();
    const r = await jail(
      [
        "/bin/sh",
        "-c",
        `${bin}/initdb -A trust -D /tmp/pg -U pg >/dev/null && ` +
          `${bin}/pg_ctl -D /tmp/pg -o "-k /tmp -c listen_addresses=''" -w start >/dev/null && ` +
          "psql -h /tmp -U pg -d postgres -Atc 'select 6*7' && " +
          `${bin}/pg_ctl -D /tmp/pg -m fast stop >/dev/null`,
      ],
      { uid: 65534, gid: 65534, timeoutMs: 60_000 },
    );
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("42\n");
  });
});
