/**
 * `lj serve --install`: `lj serve` as a system service, started at boot after the network and
 * the host's firewall (lightjail adds its own nftables table, which a ruleset loaded later
 * would flush), restarted when it fails, stopped with SIGTERM so it can end every app process
 * itself (the desired state stays in the database for the next start). Errors a restart cannot
 * fix (another server on the root, bad configuration, bad arguments) are not retried.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ExitCode } from "../errors.ts";

export interface ServiceInstall {
  /** The full command line: the lj executable (or bun + lj.ts), "serve" and its options. */
  argv: string[];
  /** LIGHTJAIL_ROOT the service runs with. */
  root: string;
}

/** Exit codes after which restarting is pointless: conflict (73), config (78), usage (64). */
const NO_RESTART = [ExitCode.cantCreate, ExitCode.config, ExitCode.usage];

/** systemd's quoting: specifiers (%) and variables ($) escaped, spaces and quotes inside "". */
function systemdWord(s: string): string {
  const e = s.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  return /^[A-Za-z0-9_@+=:,./-]+$/.test(e) ? e : `"${e.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

const shWord = (s: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);

export function systemdUnit(o: ServiceInstall): string {
  return `[Unit]
Description=lightjail PaaS server (lj serve)
Wants=network-online.target
After=network-online.target nftables.service firewalld.service

[Service]
Type=simple
Environment=${systemdWord(`LIGHTJAIL_ROOT=${o.root}`)}
ExecStart=${o.argv.map(systemdWord).join(" ")}
# SIGTERM to lj serve alone: it stops every app process itself, then exits.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=90
Restart=on-failure
RestartSec=2
RestartPreventExitStatus=${NO_RESTART.join(" ")}
# Jails get cgroups of their own; apps need many open files behind the router.
Delegate=yes
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target
`;
}

export function freebsdRcScript(o: ServiceInstall): string {
  const cmd = ["/usr/bin/env", `LIGHTJAIL_ROOT=${o.root}`, ...o.argv].map(shWord).join(" ");
  return `#!/bin/sh
#
# PROVIDE: lightjail
# REQUIRE: LOGIN NETWORKING FILESYSTEMS pf ipfw
# KEYWORD: shutdown
#
# Add lightjail_enable="YES" to /etc/rc.conf to start lj serve at boot.

. /etc/rc.subr

name="lightjail"
rcvar="lightjail_enable"
load_rc_config $name
: \${lightjail_enable:="NO"}

pidfile="/var/run/\${name}.pid"
# daemon(8) restarts lj serve 2 s after it exits (-r -R 2) and passes SIGTERM on (stop).
command="/usr/sbin/daemon"
command_args="-r -R 2 -P \${pidfile} -t lightjail -o /var/log/lightjail.log -- ${cmd.replace(/"/g, '\\"')}"

run_rc_command "$1"
`;
}

/** Where the service file goes by default on this system. */
export function defaultServiceFile(platform: NodeJS.Platform = process.platform): string {
  return platform === "freebsd" ? "/usr/local/etc/rc.d/lightjail" : "/etc/systemd/system/lightjail.service";
}

/** Writes the unit (or rc.d script); returns what to run next to enable it. */
export function installService(
  o: ServiceInstall,
  file = defaultServiceFile(),
  platform: NodeJS.Platform = process.platform,
): string[] {
  mkdirSync(dirname(file), { recursive: true });
  if (platform === "freebsd") {
    writeFileSync(file, freebsdRcScript(o), { mode: 0o555 });
    return ["sysrc lightjail_enable=YES", "service lightjail start"];
  }
  writeFileSync(file, systemdUnit(o), { mode: 0o644 });
  return ["systemctl daemon-reload", "systemctl enable --now lightjail"];
}

/**
 * The command line a service runs for this `lj serve` invocation: the same executable and
 * options, without the install options.
 */
export function serviceArgv(rawArgs: string[], argv = process.argv, execPath = process.execPath): string[] {
  const script = argv[1];
  // A compiled lj is its own executable; otherwise bun runs lj.ts.
  const exe =
    script && !script.startsWith("/$bunfs/") && script !== execPath ? [execPath, script] : [execPath];
  const opts: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--install") continue;
    if (a === "--service-file") {
      i++;
      continue;
    }
    if (a.startsWith("--service-file=")) continue;
    opts.push(a);
  }
  return [...exe, "serve", ...opts];
}
