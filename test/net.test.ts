/**
 * Jail networking on Linux, end to end with real jails: addresses, reachability, filtering,
 * gateway ports, links, egress through NAT (outside only) and complete teardown. All traffic
 * stays on this machine: the jails' subnet, a dummy interface and an "outside" network
 * namespace the tests create (it also plays the cloud metadata endpoint 169.254.169.254).
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import {
  allowGatewayPort,
  collectNetLeftovers,
  leaseOf,
  linkJails,
  type NetLeftoverReport,
  waitForPort,
} from "../src/jail/net.ts";
import { netConfig, netDirs } from "../src/jail/net-alloc.ts";
import { type Jail, spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { hostSh } from "./helpers/host-sh.ts";
import { type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { expectNoNetLeftovers, netLeftovers } from "./helpers/net-leftovers.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

// A subnet of its own, so that a real lightjail on this machine (default 10.233.0.0/16) and
// these tests never meet.
const SUBNET = "10.248.0.0/24";
const PREFIX = "10.248.0.";
const GATEWAY = "10.248.0.1";
const LEFTOVERS = { prefix: PREFIX, gatewayLine: (l: string) => l.includes(GATEWAY), links: true };
const DUMMY = "ljtdum0"; // a host interface with another local address (a veth: no dummy module here)
const DUMMY_ADDR = "198.18.7.1";
const OUT_NS = "ljt-outside"; // an "outside world" namespace behind a test uplink
const UPLINK = "ljtupl0";
const UPLINK_ADDR = "198.18.8.1";
const OUTSIDE_ADDR = "198.18.8.2";
const METADATA = "169.254.169.254"; // held by the outside namespace, routed there from the host
/** What a jail sees when the filter refuses it: ICMP admin-prohibited, i.e. EHOSTUNREACH. */
const BLOCKED = "ERR OSError 113";

let env: JailEnv;

const sh = hostSh;

beforeAll(async () => {
  if (!isRoot()) return;
  process.env.LJ_SUBNET = SUBNET;
  process.env.LJ_UPLINKS = UPLINK;
  env = await makeJailEnv();
  sh(
    `ip link del ${DUMMY} 2>/dev/null; ip link del ${UPLINK} 2>/dev/null; ip netns del ${OUT_NS} 2>/dev/null`,
  );
  const setup = [
    `ip link add ${DUMMY} type veth peer name ${DUMMY}p`,
    `ip link set ${DUMMY}p up`,
    `ip addr add ${DUMMY_ADDR}/32 dev ${DUMMY}`,
    `ip link set ${DUMMY} up`,
    `ip netns add ${OUT_NS}`,
    `ip link add ${UPLINK} type veth peer name eth0 netns ${OUT_NS}`,
    `ip addr add ${UPLINK_ADDR}/24 dev ${UPLINK}`,
    `ip link set ${UPLINK} up`,
    `ip -n ${OUT_NS} addr add ${OUTSIDE_ADDR}/24 dev eth0`,
    `ip -n ${OUT_NS} link set eth0 up`,
    `ip -n ${OUT_NS} link set lo up`,
    `ip -n ${OUT_NS} addr add ${METADATA}/32 dev lo`,
    `ip route add ${METADATA}/32 via ${OUTSIDE_ADDR} dev ${UPLINK}`,
  ];
  for (const c of setup) {
    const r = sh(c);
    if (r.code !== 0) throw new Error(`${c}: ${r.out}`);
  }
});

afterAll(async () => {
  if (!isRoot()) return;
  sh(
    `ip route del ${METADATA}/32 dev ${UPLINK}; ip link del ${DUMMY}; ip link del ${UPLINK}; ip netns del ${OUT_NS}`,
  );
  // With its uplink gone and no jail left, gc takes this root's table away too.
  const report: NetLeftoverReport = { removed: [], errors: [] };
  await collectNetLeftovers(report);
  expect(report.errors).toEqual([]);
  expect(sh(`nft list table ${netConfig().table}`).code).not.toBe(0);
  env?.cleanup();
});

const spec = (argv: string[], extra: Partial<JailSpec> = {}): JailSpec => ({
  ...env.base,
  net: "private",
  argv,
  ...extra,
  mounts: [...(env.base.mounts ?? []), ...(extra.mounts ?? [])],
});

/** A jail serving HTTP on port 8080 at its address. */
async function server(extra: Partial<JailSpec> = {}): Promise<Jail> {
  const j = spawnJail(
    spec(["/usr/bin/python3", "-m", "http.server", "--bind", "0.0.0.0", "8080"], {
      stdio: ["ignore", "ignore", "ignore"],
      ...extra,
    }),
  );
  await waitForPort(j, 8080, { timeoutMs: 10_000 });
  return j;
}

/** From inside a jail: "OK <first line>" or "ERR <reason>" for a TCP connection to host:port. */
async function tryConnect(host: string, port: number, extra: Partial<JailSpec> = {}): Promise<string> {
  const py = [
    "import socket,sys",
    "try:",
    `  s=socket.create_connection(("${host}",${port}),timeout=1.5)`,
    "  s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')",
    "  print('OK', s.recv(64).decode(errors='replace').splitlines()[0])",
    "except Exception as e:",
    "  print('ERR', type(e).__name__, getattr(e, 'errno', None) or '')",
  ].join("\n");
  return (await runToEnd(spec(["/usr/bin/python3", "-c", py], extra))).trim();
}

/** Runs a jail and waits until it is gone for good (network released), returning its stdout. */
async function runToEnd(s: JailSpec): Promise<string> {
  const j = spawnJail({ ...s, stdio: ["ignore", "pipe", "pipe"] });
  const [out, err] = await Promise.all([
    new Response(j.stdout!).text(),
    new Response(j.stderr!).text(),
    j.exited,
  ]);
  await j.closed;
  expect(err).toBe("");
  return out;
}

async function stop(...jails: Jail[]): Promise<void> {
  for (const j of jails) j.kill("SIGKILL");
  await Promise.all(jails.map((j) => j.closed));
}

/**
 * The jail's network namespace, for nsenter; refuses while it is still the host's (a jail's
 * first process enters its own a moment after it exists): a test must never change the host.
 */
function jailNet(j: Jail): string {
  const path = `/proc/${j.pid}/ns/net`;
  if (readlinkSync(path) === readlinkSync("/proc/self/ns/net"))
    throw new Error(`jail ${j.address} is not in its own network namespace yet`);
  return path;
}

/**
 * Connects from inside a jail's network namespace (the host's python3 entering only the
 * jail's netns): "OK <first line>" or "ERR <reason>".
 */
async function connectFrom(j: Jail, host: string, port: number, source?: string): Promise<string> {
  const py = [
    "import socket",
    "try:",
    `  s=socket.create_connection(("${host}",${port}),timeout=1.5${source ? `,source_address=("${source}",0)` : ""})`,
    "  s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')",
    "  print('OK', s.recv(64).decode(errors='replace').splitlines()[0])",
    "except Exception as e:",
    "  print('ERR', type(e).__name__)",
  ].join("\n");
  const p = Bun.spawn(["nsenter", `--net=${jailNet(j)}`, "/usr/bin/python3", "-c", py], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const out = await new Response(p.stdout).text();
  await p.exited;
  return out.trim();
}

/** Resolves once the jail's eth0 is configured (its default route is in place). */
/**
 * Until the jail's first process is in a network namespace of its own with its default route
 * through the jail gateway. (Until its child has entered that namespace, /proc/PID/ns/net is
 * the host's: a command "in the jail" would change the host.)
 */
async function waitUntilWired(j: Jail): Promise<void> {
  const hostNs = readlinkSync("/proc/self/ns/net");
  for (let i = 0; i < 500; i++) {
    let own = false;
    try {
      own = readlinkSync(`/proc/${j.pid}/ns/net`) !== hostNs;
    } catch {}
    if (
      own &&
      sh(`nsenter --net=/proc/${j.pid}/ns/net ip route show default`).out.includes(`via ${GATEWAY} `)
    )
      return;
    await Bun.sleep(10);
  }
  throw new Error("jail network never came up");
}

/** Host pid of a jail's payload: the keeper's child. */
function payloadPid(j: Jail): number {
  const kids = readFileSync(`/proc/${j.pid}/task/${j.pid}/children`, "utf8").trim().split(/\s+/);
  return Number(kids[0]);
}

describe("addresses", () => {
  rootTest(
    "50 concurrent spawns get 50 distinct addresses, each on its own eth0; freed addresses are reused",
    async () => {
      const jails = Array.from({ length: 50 }, () =>
        spawnJail(
          spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0 | awk '{print $4}'; exec sleep 30"], {
            stdio: ["ignore", "pipe", "ignore"],
          }),
        ),
      );
      const addrs = jails.map((j) => j.address!);
      expect(new Set(addrs).size).toBe(50);
      for (const a of addrs) expect(a.startsWith(PREFIX)).toBe(true);
      // Each jail sees exactly the address the API reports.
      const seen = await Promise.all(
        jails.map(async (j) => {
          const reader = j.stdout!.getReader();
          let text = "";
          while (!text.includes("\n")) {
            const { value, done } = await reader.read();
            if (done) break;
            text += new TextDecoder().decode(value);
          }
          reader.releaseLock();
          return text.trim();
        }),
      );
      expect(seen).toEqual(addrs);
      await stop(...jails);
      await expectNoNetLeftovers(LEFTOVERS);
      const again = await runToEnd(spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0 | awk '{print $4}'"]));
      expect(again.trim()).toBe(`${PREFIX}2`);
    },
    60_000,
  );

  rootTest("an explicit address is honoured, and a second jail cannot take it", async () => {
    const a = await server({ address: `${PREFIX}77/24` });
    expect(a.address).toBe(`${PREFIX}77`);
    expect(() => spawnJail(spec(["true"], { address: `${PREFIX}77` }))).toThrow(/in use/);
    expect(() => spawnJail(spec(["true"], { address: "10.99.0.5" }))).toThrow(/outside the jail subnet/);
    expect(() => spawnJail(spec(["true"], { address: GATEWAY }))).toThrow(/reserved/);
    await stop(a);
    await expectNoNetLeftovers(LEFTOVERS);
  });
});

describe("reachability and filtering", () => {
  rootTest("the host reaches a listener inside the jail at ADDR:PORT", async () => {
    const j = await server();
    const res = await fetch(`http://${j.address}:8080/`);
    expect(res.status).toBe(200);
    await res.text();
    await stop(j);
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "the root's table deleted by hand: a jail's filter elements cannot go in, its owner makes the table again and puts them in",
    async () => {
      // This process has the root's table: a jail's elements go in before its spawn.
      const first = await server();
      expect(sh(`nft list set ${netConfig().table} jails`).out).toContain(first.address!);
      await stop(first);
      expect(sh(`nft delete table ${netConfig().table}`).code).toBe(0);
      // The elements' transaction fails (no table); the jail must not run before its owner has
      // made the table again and put its elements in, or the host could not reach it (a jail's
      // packets without its element are dropped).
      const j = await server();
      const res = await fetch(`http://${j.address}:8080/`);
      expect(res.status).toBe(200);
      await res.text();
      expect(sh(`nft list set ${netConfig().table} jails`).out).toContain(j.address!);
      await stop(j);
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );

  rootTest(
    "the gateway answers a jail only on allowed ports; the host's other addresses never",
    async () => {
      const peers: string[] = [];
      const srv = Bun.listen({
        hostname: "0.0.0.0",
        port: 0,
        socket: {
          open(s) {
            peers.push(s.remoteAddress);
            s.write("HELLO\n");
            s.end();
          },
          data() {},
        },
      });
      const loop = Bun.listen({
        hostname: "127.0.0.1",
        port: 0,
        socket: { open: (s) => void s.end("LOOP\n"), data() {} },
      });
      const hostAddr = sh(
        "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | grep -v ^198.18 | grep -v ^10.2 | head -1",
      ).out.trim();
      try {
        // A host listener on 0.0.0.0 answers on every host address; by default no jail gets in.
        expect(await tryConnect(GATEWAY, srv.port)).toBe(BLOCKED);
        expect(await tryConnect(DUMMY_ADDR, srv.port)).toBe(BLOCKED);
        if (hostAddr) expect(await tryConnect(hostAddr, srv.port)).toBe(BLOCKED);
        expect(peers).toEqual([]);
        // Opened for this root: the gateway address answers on that port, and only there.
        const open = await allowGatewayPort(srv.port);
        expect(await tryConnect(GATEWAY, srv.port)).toBe("OK HELLO");
        expect(peers[0]?.startsWith(PREFIX)).toBe(true);
        expect(await tryConnect(DUMMY_ADDR, srv.port)).toBe(BLOCKED);
        if (hostAddr) expect(await tryConnect(hostAddr, srv.port)).toBe(BLOCKED);
        expect(await tryConnect(GATEWAY, loop.port)).toBe(BLOCKED);
        // 127.0.0.1 is the jail's own loopback: nothing listens there.
        expect(await tryConnect("127.0.0.1", loop.port)).toBe("ERR ConnectionRefusedError 111");
        await open.close();
        expect(await tryConnect(GATEWAY, srv.port)).toBe(BLOCKED);
        expect(peers.length).toBe(1);
      } finally {
        srv.stop(true);
        loop.stop(true);
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );

  rootTest(
    "jails cannot reach each other unless linked; a link is one-way and ends with a jail",
    async () => {
      const a = await server();
      const b = await server();
      expect(await connectFrom(b, a.address!, 8080)).toMatch(/^ERR/);
      expect(await connectFrom(a, b.address!, 8080)).toMatch(/^ERR/);
      const link = await linkJails(b, a);
      expect(await connectFrom(b, a.address!, 8080)).toBe("OK HTTP/1.0 200 OK");
      expect(await connectFrom(a, b.address!, 8080)).toMatch(/^ERR/);
      await link.unlink();
      expect(await connectFrom(b, a.address!, 8080)).toMatch(/^ERR/);
      // Spawned with a link: reaches its service; the link goes when the jail does.
      const app = await server({ links: [a.address!] });
      expect(await connectFrom(app, a.address!, 8080)).toBe("OK HTTP/1.0 200 OK");
      expect(readdirSync(netDirs.links())).toEqual([`${app.address}_${a.address}`]);
      await stop(app);
      expect(readdirSync(netDirs.links())).toEqual([]);
      await stop(a, b);
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );

  rootTest(
    "a jail cannot pose as another: spoofed source addresses are dropped",
    async () => {
      // a receives UDP datagrams and prints each with its source; b may talk to a (linked).
      const a = spawnJail(
        spec(
          [
            "/usr/bin/python3",
            "-u",
            "-c",
            [
              "import socket",
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)",
              "s.bind(('0.0.0.0',9999))",
              "print('ready')",
              "while True:",
              "  d,src=s.recvfrom(100)",
              "  print(d.decode(),src[0])",
            ].join("\n"),
          ],
          { stdio: ["ignore", "pipe", "inherit"] },
        ),
      );
      const received: string[] = [];
      const reading = (async () => {
        for await (const chunk of a.stdout!) received.push(...new TextDecoder().decode(chunk).split("\n"));
      })();
      const b = await server();
      const link = await linkJails(b, a);
      const c = spawnJail(spec(["/bin/sleep", "30"]));
      try {
        await waitUntilWired(c);
        for (let i = 0; i < 500 && !received.includes("ready"); i++) await Bun.sleep(10);
        expect(received).toContain("ready");
        // Sends one datagram from inside a jail's network namespace, from `source`.
        const send = (j: Jail, source: string, text: string) =>
          sh(
            `nsenter --net=${jailNet(j)} /usr/bin/python3 -c "import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('${source}',0)); s.sendto(b'${text}',('${a.address}',9999))"`,
          );
        // c takes b's address as an extra one and sends as b: the filter knows b's address lives
        // behind b's veth, and drops it. The same datagram from b itself arrives.
        expect(sh(`nsenter --net=${jailNet(c)} ip addr add ${b.address}/32 dev eth0`).code).toBe(0);
        const forged = send(c, b.address!, "forged");
        expect(forged.out).toBe("");
        expect(forged.code).toBe(0);
        await Bun.sleep(500);
        expect(send(b, b.address!, "genuine").code).toBe(0);
        for (let i = 0; i < 300 && !received.some((l) => l.startsWith("genuine")); i++) await Bun.sleep(10);
        expect(received).toContain(`genuine ${b.address}`);
        expect(received.filter((l) => l.startsWith("forged"))).toEqual([]);
      } finally {
        await link.unlink();
        await stop(a, b, c);
        await reading;
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );

  rootTest(
    "egress reaches the outside through NAT, and nothing of the machine: host, jails, metadata",
    async () => {
      const listen = (addr: string, port: number) =>
        `Bun.listen({hostname:"${addr}",port:${port},socket:{open(s){s.end("FROM "+s.remoteAddress+"\\n")},data(){}}});`;
      const outside = Bun.spawn(
        [
          // nsenter execs the server itself (ip netns exec would stay its parent, and killing
          // it would leave the server running).
          "nsenter",
          `--net=/run/netns/${OUT_NS}`,
          process.execPath,
          "-e",
          `${listen(OUTSIDE_ADDR, 7070)}${listen(METADATA, 80)}console.log("up")`,
        ],
        { stdout: "pipe", stderr: "inherit" },
      );
      const host = Bun.listen({
        hostname: "0.0.0.0",
        port: 0,
        socket: { open: (s) => void s.end("HOST\n"), data() {} },
      });
      const svc = await server();
      const egress = { egress: true, iface: UPLINK };
      try {
        const r = outside.stdout.getReader();
        await r.read();
        r.releaseLock();
        // The metadata address is on this machine: the host reaches it in the test namespace.
        expect(sh(`ip -4 route get ${METADATA}`).out).toContain(`dev ${UPLINK}`);
        const probe = await Bun.connect({
          hostname: METADATA,
          port: 80,
          socket: { data() {}, open() {} },
        });
        probe.end();
        expect(await tryConnect(OUTSIDE_ADDR, 7070)).toBe(BLOCKED);
        // Out through the uplink, masqueraded behind the host's address there.
        expect(await tryConnect(OUTSIDE_ADDR, 7070, egress)).toBe(`OK FROM ${UPLINK_ADDR}`);
        expect(await tryConnect(METADATA, 80, egress)).toBe(BLOCKED);
        expect(await tryConnect(DUMMY_ADDR, host.port, egress)).toBe(BLOCKED);
        expect(await tryConnect(UPLINK_ADDR, host.port, egress)).toBe(BLOCKED);
        expect(await tryConnect(GATEWAY, host.port, egress)).toBe(BLOCKED);
        expect(await tryConnect(svc.address!, 8080, egress)).toBe(BLOCKED);
        // Links still open the way to a service, egress or not.
        expect(await tryConnect(svc.address!, 8080, { ...egress, links: [svc.address!] })).toBe(
          "OK HTTP/1.0 200 OK",
        );
        expect(() => spawnJail(spec(["true"], { egress: true, iface: "lo" }))).toThrow(
          /not a configured uplink/,
        );
        expect(() => spawnJail(spec(["true"], { iface: UPLINK }))).toThrow(/--egress/);
      } finally {
        outside.kill();
        host.stop(true);
        await outside.exited;
        await stop(svc);
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
    60_000,
  );

  rootTest(
    "DNS works with egress: a resolver outside the machine is reached through NAT",
    async () => {
      // A one-answer DNS server in the outside namespace stands for the host's resolver.
      const dns = Bun.spawn(
        [
          // nsenter execs the server itself (ip netns exec would stay its parent, and killing
          // it would leave the server running).
          "nsenter",
          `--net=/run/netns/${OUT_NS}`,
          "/usr/bin/python3",
          "-u",
          "-c",
          [
            "import socket",
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)",
            `s.bind(('${OUTSIDE_ADDR}',53))`,
            "print('up')",
            "while True:",
            "  q,src=s.recvfrom(512)",
            "  print('query from', src[0])",
            "  r=q[:2]+b'\\x81\\x80'+q[4:6]+b'\\x00\\x01\\x00\\x00\\x00\\x00'+q[12:]",
            "  r+=b'\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04'+bytes([198,18,9,9])",
            "  s.sendto(r,src)",
          ].join("\n"),
        ],
        { stdout: "pipe", stderr: "inherit" },
      );
      let log = "";
      const reading = (async () => {
        for await (const c of dns.stdout) log += new TextDecoder().decode(c);
      })();
      try {
        for (let i = 0; i < 500 && !log.includes("up\n"); i++) await Bun.sleep(10);
        const resolv = join(env.root, "resolv.conf");
        await Bun.write(resolv, `nameserver ${OUTSIDE_ADDR}\noptions timeout:2 attempts:1\n`);
        const lookup = spec(["/usr/bin/getent", "ahostsv4", "registry.example"], {
          egress: true,
          iface: UPLINK,
          mounts: [{ src: resolv, dst: "/etc/resolv.conf", readonly: true }],
        });
        const out = await runToEnd(lookup);
        expect(out).toContain("198.18.9.9");
        expect(log).toContain(`query from ${UPLINK_ADDR}\n`);
      } finally {
        dns.kill();
        await dns.exited;
        await reading;
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );
});

describe("teardown", () => {
  rootTest("nothing is left after the payload is SIGKILLed", async () => {
    const j = await server({ egress: true, iface: UPLINK });
    expect(existsSync(`/sys/class/net/${leaseOf(j.address!)!.veth}`)).toBe(true);
    process.kill(payloadPid(j), "SIGKILL");
    const r = await j.exited;
    expect(r.signal).toBe(9);
    await j.closed;
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "after the owner is SIGKILLed, lj gc removes lease, veth and rules",
    async () => {
      const script = join(env.root, "owner.ts");
      const ownerSpec = {
        ...env.base,
        net: "private",
        egress: true,
        links: [`${PREFIX}9`],
        argv: ["/bin/sh", "-c", "echo up; exec sleep 60"],
        stdio: ["ignore", "pipe", "inherit"],
      };
      await Bun.write(
        script,
        `import { spawnJail } from ${JSON.stringify(join(projectDir, "src/jail/spawn.ts"))};
const j = spawnJail(${JSON.stringify(ownerSpec)});
for await (const _ of j.stdout) break; // the payload runs: its network is in place
console.log(j.address);
await j.exited;`,
      );
      const owner = Bun.spawn([process.execPath, script], {
        stdout: "pipe",
        stderr: "inherit",
        env: process.env,
      });
      const reader = owner.stdout.getReader();
      const { value } = await reader.read();
      const address = new TextDecoder().decode(value).trim();
      expect(address.startsWith(PREFIX)).toBe(true);
      expect(netLeftovers(LEFTOVERS).length).toBeGreaterThan(0);
      owner.kill("SIGKILL");
      await owner.exited;
      const gc = await lj(["gc"]);
      expect(gc.stderr).toBe("");
      expect(gc.code).toBe(0);
      expect(gc.stdout).toContain(`net-lease ${address}`);
      await expectNoNetLeftovers(LEFTOVERS);
      const again = await lj(["gc"]);
      expect(again.stdout).not.toMatch(/net-(lease|veth|rule)/);
    },
    30_000,
  );
});

describe("cli", () => {
  rootTest(
    "lj spawn -i auto: the jail has its address; -f without a configured uplink is refused",
    async () => {
      const r = await lj([
        "spawn",
        "--world",
        "test",
        "-i",
        "auto",
        "-p",
        "ip -4 -o addr show dev eth0 | awk '{print $4}'; ip route | head -1",
      ]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`${PREFIX}2\ndefault via ${GATEWAY} dev eth0 \n`);
      const bad = await lj([
        "spawn",
        "--world",
        "test",
        "-i",
        "auto",
        "--egress",
        "-f",
        "eth9",
        "-p",
        "true",
      ]);
      expect(bad.code).toBe(64);
      expect(bad.stdout).toBe("");
      expect(bad.stderr).toContain("not a configured uplink");
      await expectNoNetLeftovers(LEFTOVERS);
    },
    30_000,
  );
});

describe("containment", () => {
  rootTest(
    "an address of the jail subnet without a live jail is unreachable, never routed off the machine",
    async () => {
      const unreachable = () => {
        const route = sh(`ip -4 route get ${PREFIX}99`);
        expect(route.code).not.toBe(0);
        expect(route.out).toMatch(/unreachable|No route/);
      };
      const j = await server();
      // Nobody is at .99: unreachable from the start (the route came with the root's table).
      unreachable();
      await stop(j);
      // The jail is gone: its address must not follow the host's default route.
      const route = sh(`ip -4 route get ${j.address}`);
      expect(route.code).not.toBe(0);
      expect(route.out).toMatch(/unreachable|No route/);
      // The route deleted by hand is back once a jail has ended.
      expect(sh(`ip -4 route del unreachable ${SUBNET}`).code).toBe(0);
      expect(sh(`ip -4 route get ${PREFIX}99`).code).toBe(0); // the default route would take it
      await stop(await server());
      unreachable();
    },
  );
});

describe("health of an address", () => {
  rootTest(
    "waitForPort does not take another jail's answer at a reused address for the ended one's",
    async () => {
      const gone = spawnJail(spec(["true"], { address: `${PREFIX}88` }));
      await gone.closed; // ended, its address free again
      const other = await server({ address: `${PREFIX}88/24` });
      try {
        // Something answers at .88:8080, but not the jail that was asked about.
        await expect(waitForPort(gone, 8080, { timeoutMs: 2000 })).rejects.toThrow(
          "ended before port 8080 opened",
        );
        await waitForPort(other, 8080, { timeoutMs: 2000 });
      } finally {
        await stop(other);
      }
    },
  );
});
