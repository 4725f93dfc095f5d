/**
 * The demo behind `./lj demo`: makes a world from the host (instant, without its secrets),
 * then runs jailed processes that show what a jail is and what it keeps out. It uses the
 * public TypeScript API, as a program of yours would.
 */

import { createWorld } from "../src/build/worlds.ts";
import { runJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { paths } from "../src/store/paths.ts";
import { listWorlds, setDefaultWorld, worldMounts, worldPath } from "../src/store/worlds.ts";

if (process.getuid?.() !== 0) {
  console.error("The demo creates namespaces, mounts and cgroups: run it as root (sudo ./lj demo).");
  process.exit(77);
}

const bold = (s: string) => `\x1b[1m${s}\x1b[0m`;
const dim = (s: string) => `\x1b[2m${s}\x1b[0m`;
const ok = (s: string) => `\x1b[32m✔\x1b[0m ${s}`;
const no = (s: string) => `\x1b[31m✘\x1b[0m ${s}`;

console.log(bold(`lightjail demo (root: ${paths.root()})`));
const worlds = await listWorlds();
const name = worlds.find((w) => w.name === "host") ? "host" : worlds.length === 0 ? "host" : worlds[0]!.name;
if (!worlds.find((w) => w.name === name)) {
  console.log(dim("creating world 'host' from the host's system (no copies of /usr, no secrets) ..."));
  await createWorld(name, "host");
  await setDefaultWorld(name);
}
const base: Pick<JailSpec, "layers" | "mounts"> = {
  layers: [worldPath(name)],
  mounts: await worldMounts(name),
};
const sh = (script: string, extra: Partial<JailSpec> = {}) =>
  runJail({ ...base, argv: ["/bin/sh", "-c", script], hostname: "demo", ...extra });

console.log(`\n${bold("1. A jail's view of the machine")} ${dim(`(world: ${name})`)}`);
const view = await sh(
  'echo "hostname: $(hostname)"; echo "my pid: $$"; echo "processes: $(ls /proc | grep -c "^[0-9]")"; echo "uid: $(id -u)"; echo "network: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\\n" " ")"; echo "capabilities: $(grep CapEff /proc/self/status | cut -f2)"',
);
for (const l of view.stdout.trim().split("\n")) console.log(`   ${l}`);

console.log(`\n${bold("2. What stays out")}`);
const probes: [string, string][] = [
  ["read /etc/shadow", "cat /etc/shadow"],
  ["list /root", "ls -A /root | grep -q . && ls /root"],
  ["write to the world's /usr", "touch /usr/lj-demo"],
  ["mount a filesystem", "mount -t tmpfs none /mnt"],
  ["change a kernel setting", "echo 1 > /proc/sys/kernel/panic"],
  [
    "reach the network",
    "cat < /dev/tcp/127.0.0.1/22 2>/dev/null || (command -v getent >/dev/null && getent hosts deb.debian.org)",
  ],
];
for (const [what, cmd] of probes) {
  const r = await sh(`${cmd} >/dev/null 2>&1`);
  console.log(r.status === 0 ? no(`${what}: allowed`) : ok(`${what}: refused`));
}
const w = await sh("echo hello > /etc/motd && cat /etc/motd");
console.log(
  ok(`writes land in a throwaway layer: the jail read back "${w.stdout.trim()}", the world is untouched`),
);

console.log(`\n${bold("3. Limits")}`);
const mem = await sh('x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo done', {
  limits: { memoryBytes: 48 << 20 },
});
console.log(
  mem.reason === "oom"
    ? ok("a 200 MB hog in a 48 MB jail was killed, and reported as the memory limit")
    : no(`memory hog: ${mem.reason}`),
);
const bomb = await sh("i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); echo $i; done", {
  limits: { pids: 32 },
});
const forked = bomb.stdout.trim().split("\n").at(-1);
console.log(ok(`a fork loop stopped at ${forked} processes (limit 32); everything died with the jail`));
const nobody = await sh("id -un", { uid: 65534, gid: 65534 });
console.log(ok(`-0 runs as ${nobody.stdout.trim()}`));

console.log(`\n${bold("4. Speed")}`);
const n = 100;
const t = performance.now();
for (let i = 0; i < n; i++) await runJail({ ...base, argv: ["/bin/true"] });
const each = (performance.now() - t) / n;
console.log(
  ok(`${n} jails, one after another: ${each.toFixed(2)} ms each (${Math.round(1000 / each)} jails/s)`),
);

console.log(
  `\nTry it yourself: ${bold("sudo ./lj spawn -n box -p 'hostname; ps aux'")}  ${dim("(./lj spawn --help)")}`,
);
