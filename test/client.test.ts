/**
 * The `lj` client as a user meets it, through real processes: login and several servers, the
 * `lj` git remote with the credential helper, the app inferred from a checkout, interactive
 * `lj run` through a real pseudo-terminal, completion, colours, errors and exit codes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { fakeBuild } from "./fixtures/paas/fake-build.ts";
import { appCopy, deployDir, removeAppCopies, until } from "./fixtures/paas/helpers.ts";
import { cliPath, type JailEnv, makeJailEnv, projectDir, type RunResult } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let s: RunningServer;
/** A LIGHTJAIL_ROOT with nothing in it: the client cannot fall back on a local server's token. */
let emptyRoot: string;
const temps: string[] = [];
const temp = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
};

beforeAll(async () => {
  emptyRoot = temp("lj-client-root-");
  if (!isRoot()) return;
  process.env.LJ_SUBNET = "10.238.17.0/24";
  env = await makeJailEnv();
  s = await startServer({ build: fakeBuild, healthTimeoutMs: 8000 });
});

afterAll(async () => {
  removeAppCopies();
  if (isRoot()) {
    await s?.stop();
    env?.cleanup();
  }
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** The environment of a user's shell: no LJ_* settings, a config home of its own. */
function userEnv(config: string, extra: Record<string, string> = {}): Record<string, string> {
  const e: Record<string, string> = {};
  // A person's shell: not the test run's lightjail settings, nor its CI marker (which turns
  // colours off the way NO_COLOR does).
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("LJ_") && k !== "CI") e[k] = v;
  return {
    ...e,
    XDG_CONFIG_HOME: config,
    LIGHTJAIL_ROOT: emptyRoot,
    GIT_TERMINAL_PROMPT: "0",
    GIT_CONFIG_NOSYSTEM: "1",
    HOME: config,
    ...extra,
  };
}

/** Runs lj with stdin from `input` (or none), capturing everything. */
async function ljIn(
  args: string[],
  envVars: Record<string, string>,
  opts: { cwd?: string; input?: string } = {},
): Promise<RunResult> {
  const p = Bun.spawn([process.execPath, cliPath, ...args], {
    // Never this repository's checkout: apps create would add a remote to it.
    cwd: opts.cwd ?? emptyRoot,
    env: envVars,
    stdin: opts.input === undefined ? "ignore" : new TextEncoder().encode(opts.input),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

/**
 * Runs lj on a real pseudo-terminal (python3's pty module), `rows` x `cols`, typing each of
 * `steps` once the output so far matches its pattern (a `resize` step changes the size).
 */
async function ljOnPty(
  args: string[],
  envVars: Record<string, string>,
  steps: ({ after: string; type: string } | { after: string; resize: [number, number] })[],
  size: [number, number] = [33, 111],
): Promise<{ code: number; output: string }> {
  const driver = `
import os, pty, sys, json, fcntl, termios, struct, select, signal, time
argv, steps, size = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
out = b""
deadline = time.time() + 90
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    while steps and steps[0]["after"].encode() in out:
        st = steps.pop(0)
        if "type" in st:
            os.write(fd, st["type"].encode())
        else:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", st["resize"][0], st["resize"][1], 0, 0))
            os.kill(pid, signal.SIGWINCH)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
`;
  const p = Bun.spawn(
    [
      "python3",
      "-c",
      driver,
      JSON.stringify([process.execPath, cliPath, ...args]),
      JSON.stringify(steps),
      JSON.stringify(size),
    ],
    { env: envVars, cwd: emptyRoot, stdin: "ignore", stdout: "pipe", stderr: "inherit" },
  );
  const [output, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return { code, output };
}

const git = (dir: string, envVars: Record<string, string>, ...a: string[]) =>
  ljRaw(["git", "-C", dir, "-c", "user.email=t@t", "-c", "user.name=t", ...a], envVars);

async function ljRaw(argv: string[], envVars: Record<string, string>): Promise<RunResult> {
  const p = Bun.spawn(argv, {
    env: envVars,
    cwd: emptyRoot,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, stdout, stderr };
}

describe("login and servers", () => {
  rootTest("lj login stores the server and token 0600; logout forgets it; servers by name", async () => {
    const config = temp("lj-client-cfg-");
    const e = userEnv(config);
    const none = await ljIn(["apps", "list", "--remote", s.url], e);
    expect(none.code).toBe(77);
    const wrong = await ljIn(["login", s.url], e, { input: "lj_wrong\n" });
    expect(wrong.code).toBe(77);
    expect(wrong.stderr).toContain("refused the token");

    const login = await ljIn(["login", s.url, "--name", "local"], e, { input: `${s.token}\n` });
    expect(login.stderr).toBe("");
    expect(login.code).toBe(0);
    const file = join(config, "lightjail", "client.json");
    expect((statSync(file).mode & 0o777).toString(8)).toBe("600");
    const stored = JSON.parse(readFileSync(file, "utf8"));
    expect(stored).toEqual({ current: "local", servers: { local: { url: s.url, token: s.token } } });
    const list = await ljIn(["apps", "list"], e);
    expect(list.code).toBe(0);

    // A second server under another name (the same one by another address), chosen by name.
    const other = s.url.replace("127.0.0.1", "localhost");
    expect((await ljIn(["login", other, "--name", "second"], e, { input: s.token })).code).toBe(0);
    const servers = await ljIn(["servers"], e);
    expect(servers.stdout).toMatch(/^\s+local\s+http:\/\/127\.0\.0\.1:\d+$/m);
    expect(servers.stdout).toMatch(/^\*\s+second\s+http:\/\/localhost:\d+$/m);
    expect((await ljIn(["apps", "list", "--remote", "local"], e)).code).toBe(0);
    const unknown = await ljIn(["apps", "list", "--remote", "nosuch"], e);
    expect(unknown.code).toBe(64);
    expect(unknown.stderr).toContain('no server named "nosuch"');

    expect((await ljIn(["logout", "second"], e)).code).toBe(0);
    expect((await ljIn(["logout"], e)).code).toBe(0);
    expect(JSON.parse(readFileSync(file, "utf8")).servers).toEqual({});
    expect((await ljIn(["apps", "list", "--remote", s.url], e)).code).toBe(77);
  });
});

describe("a checkout of an app", () => {
  rootTest(
    "apps create adds the lj remote; git push works through the credential helper; the app is inferred",
    async () => {
      const config = temp("lj-client-cfg-");
      const e = userEnv(config);
      expect((await ljIn(["login", s.url], e, { input: s.token })).code).toBe(0);
      const dir = appCopy("node-hello");
      expect((await git(dir, e, "init", "-q", "-b", "main")).code).toBe(0);
      await git(dir, e, "add", "-A");
      await git(dir, e, "commit", "-qm", "first");

      const created = await ljIn(["apps", "create", "checkout"], e, { cwd: dir });
      expect(created.stderr).toBe("");
      expect(created.code).toBe(0);
      const port = new URL(s.url).port;
      expect(created.stdout).toContain(`url:        http://checkout.localhost:${port}`);
      const url = (await git(dir, e, "remote", "get-url", "lj")).stdout.trim();
      expect(url).toBe(`${s.url}/git/checkout.git`);
      expect(url).not.toContain(s.token);

      const push = await git(dir, e, "push", "lj", "main");
      expect(push.stderr).toContain("release v1 is serving");
      expect(push.code).toBe(0);
      // The URL apps create printed loads (its host name is the router's, its port the server's).
      const page = await fetch(`http://127.0.0.1:${port}/`, {
        headers: { host: `checkout.localhost:${port}` },
      });
      expect(page.status).toBe(200);

      // No app named: the checkout's.
      const ps = await ljIn(["ps"], e, { cwd: dir });
      expect(ps.code).toBe(0);
      expect(ps.stdout).toContain("web.1");
      expect((await ljIn(["config", "set", "GREETING=hi"], e, { cwd: dir })).code).toBe(0);
      const cfg = await ljIn(["config"], e, { cwd: dir });
      expect(cfg.stdout).toBe("GREETING=hi\n");
      expect((await ljIn(["config", "checkout"], e)).stdout).toBe("GREETING=hi\n");
      expect((await ljIn(["config", "get", "GREETING"], e, { cwd: dir })).stdout).toBe("hi\n");

      // Rollback without a version: the release before the current one (v1, without GREETING).
      const back = await ljIn(["rollback"], e, { cwd: dir });
      expect(back.stderr).toBe("");
      expect(back.stdout).toContain("rolled back checkout to v1: now release v3");
      expect((await ljIn(["config"], e, { cwd: dir })).stdout).toBe("");

      // Outside a checkout, no app is a usage error that says how to name one.
      const lost = await ljIn(["ps"], e, { cwd: config });
      expect(lost.code).toBe(64);
      expect(lost.stderr).toContain("lj apps create");

      // The helper answers git's question with the stored token, and nothing for other hosts.
      const cred = await ljIn(["git-credential", "get"], e, {
        input: `protocol=http\nhost=${new URL(s.url).host}\npath=git/checkout.git\n\n`,
      });
      expect(cred.stdout).toBe(`username=lj\npassword=${s.token}\n`);
      const other = await ljIn(["git-credential", "get"], e, {
        input: "protocol=https\nhost=example.com\n\n",
      });
      expect(other.stdout).toBe("");
    },
    120_000,
  );
});

describe("lj run", () => {
  let e: Record<string, string>;
  beforeAll(async () => {
    if (!isRoot()) return;
    e = userEnv(temp("lj-client-cfg-"), { LJ_REMOTE: s.url, LJ_TOKEN: s.token });
    const create = await ljIn(["apps", "create", "runner"], e);
    if (create.code !== 0) throw new Error(create.stderr);
    const d = await deployDir(s, "runner", appCopy("node-hello"));
    if (d.deploy?.status !== "succeeded") throw new Error(d.log);
  });

  rootTest("arguments pass through untouched; stdin is forwarded; the exit status is lj's", async () => {
    const ls = await ljIn(["run", "runner", "ls", "-la", "/"], e);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^total \d+/m);
    expect(ls.stdout).toContain("..");
    const streams = await ljIn(["run", "runner", "--", "sh", "-c", "echo out; echo err >&2; exit 5"], e);
    expect(streams).toEqual({ code: 5, stdout: "out\n", stderr: "err\n" });
    const cat = await ljIn(["run", "runner", "--", "sh", "-c", "tr a-z A-Z; tty || true"], e, {
      input: "piped in\n",
    });
    expect(cat.stdout).toBe("PIPED IN\nnot a tty\n");
    const none = await ljIn(["run", "nosuchapp", "--", "true"], e);
    expect(none.code).toBe(66);
  });

  rootTest("from a terminal: a /dev/pts terminal of its own, its size, input, exit status", async () => {
    const r = await ljOnPty(
      [
        "run",
        "runner",
        "--",
        "sh",
        "-c",
        "tty; stty size; echo ready; read x; echo got $x; stty size; exit 3",
      ],
      e,
      [
        { after: "ready", type: "hello\r" },
        { after: "got hello", resize: [40, 100] },
      ],
    );
    expect(r.output).toMatch(/^\/dev\/pts\/\d+\r$/m);
    expect(r.output).toContain("33 111");
    expect(r.output).toContain("got hello");
    expect(r.code).toBe(3);
  });

  rootTest("the window size follows the client's terminal", async () => {
    // The resize reaches the client as SIGWINCH, whenever its handler runs: the jail waits
    // (up to 5 s) for its terminal's size to change, then reports it.
    const script =
      'stty size; echo ready; for i in $(seq 100); do s=$(stty size); [ "$s" != "33 111" ] && break; sleep 0.05; done; echo "now $s"';
    const r = await ljOnPty(["run", "runner", "--", "sh", "-c", script], e, [
      { after: "ready", resize: [40, 100] },
    ]);
    expect(r.output).toContain("33 111");
    expect(r.output).toContain("now 40 100");
    expect(r.code).toBe(0);
  });

  rootTest("bash gets job control and TERM", async () => {
    const r = await ljOnPty(
      ["run", "runner", "--", "bash", "--norc", "-i"],
      { ...e, TERM: "xterm-256color" },
      [
        { after: "$ ", type: "echo term=$TERM\r" },
        { after: "term=xterm-256color", type: "sleep 30 &\r" },
        { after: "[1]", type: "jobs\r" },
        { after: "Running", type: "kill %1; exit 4\r" },
      ],
    );
    expect(r.output).not.toContain("no job control");
    expect(r.output).toMatch(/\[1\]\+\s+Running\s+sleep 30 &/);
    expect(r.code).toBe(4);
  });
});

describe("the command line itself", () => {
  const e = () => userEnv(temp("lj-client-cfg-"));

  test("did you mean; --json errors are JSON on stdout", async () => {
    const typo = await ljIn(["aps", "list"], e());
    expect(typo.code).toBe(64);
    expect(typo.stderr).toContain("did you mean `lj apps`");
    const sub = await ljIn(["apps", "lsit"], e());
    expect(sub.stderr).toContain("did you mean `lj apps list`");
    const j = await ljIn(["apps", "info", "x", "--json", "--remote", "http://127.0.0.1:1"], e());
    expect(j.code).toBe(69);
    expect(JSON.parse(j.stdout).error.code).toBe("no-server");
  });

  test("bash completion loads in bash and completes commands and subcommands", async () => {
    const script = join(temp("lj-compl-"), "lj.bash");
    const gen = await ljIn(["completion", "bash"], e());
    expect(gen.code).toBe(0);
    writeFileSync(script, gen.stdout);
    const r = await ljRaw(
      [
        "bash",
        "-c",
        `source ${script} && COMP_WORDS=(lj ap) COMP_CWORD=1 && _lj && echo "[\${COMPREPLY[*]}]" && COMP_WORDS=(lj apps cr) COMP_CWORD=2 && _lj && echo "[\${COMPREPLY[*]}]" && complete -p lj`,
      ],
      e(),
    );
    expect(r.stdout).toBe("[apps]\n[create]\ncomplete -F _lj lj\n");
    for (const shell of ["zsh", "fish"]) {
      const g = await ljIn(["completion", shell], e());
      expect(g.code).toBe(0);
      expect(g.stdout).toContain("apps");
    }
    expect((await ljIn(["completion", "tcsh"], e())).code).toBe(64);
  });

  test("no colours unless both streams are terminals, and never with NO_COLOR", async () => {
    const piped = await ljIn(["--help"], e());
    expect(piped.stdout + piped.stderr).not.toContain("\x1b[");
    const typo = await ljIn(["apps", "nosuch"], e());
    expect(typo.stderr).not.toContain("\x1b[");
    const onTerminal = await ljOnPty(["--help"], e(), []);
    expect(onTerminal.output).toContain("\x1b[");
    const noColor = await ljOnPty(["--help"], { ...e(), NO_COLOR: "yes" }, []);
    expect(noColor.output).not.toContain("\x1b[");
    const boot = readFileSync(join(projectDir, "scripts/bootstrap.sh"), "utf8");
    expect(boot).toContain("NO_COLOR");
  });

  test("man pages for lj and ljspawn, in the package's man field, render without warnings", async () => {
    const pkg = JSON.parse(readFileSync(join(projectDir, "package.json"), "utf8")) as { man: string[] };
    expect(pkg.man.map((m) => m.replace(/^\.\//, "")).sort()).toEqual(["man/lj.1", "man/ljspawn.1"]);
    for (const page of pkg.man) {
      const r = await ljRaw(["groff", "-man", "-Tutf8", "-ww", join(projectDir, page)], e());
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
    }
    // Plain ASCII, no overstriking, long lines: the words as a reader sees them.
    const plain = ["groff", "-man", "-Tascii", "-P-b", "-P-o", "-P-u", "-rLL=300n"];
    const lj = await ljRaw([...plain, join(projectDir, "man/lj.1")], e());
    for (const word of ["lj login", "git-credential", "lj run", "completion", "NO_COLOR"]) {
      expect(lj.stdout).toContain(word);
    }
  });

  rootTest("without root: one sentence and exit 77 for the commands that need it", async () => {
    const home = temp("lj-nobody-");
    chmodSync(home, 0o777);
    for (const args of [["spawn", "--", "/bin/true"], ["world", "list"], ["gc"]]) {
      const r = await ljRaw(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, cliPath, ...args],
        { ...userEnv(home), HOME: home },
      );
      expect(r.code).toBe(77);
      expect(r.stderr).toBe(`lj needs root (sudo) for \`lj ${args[0]}\`\n`);
    }
    // Commands that only talk to a server do not need root.
    const r = await ljRaw(
      [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        process.execPath,
        cliPath,
        "completion",
        "bash",
      ],
      { ...userEnv(home), HOME: home },
    );
    expect(r.code).toBe(0);
  });

  rootTest("ljspawn -- CMD through the package's bin, as through lj spawn", async () => {
    const bin = join(projectDir, "src/cli/ljspawn.ts");
    const r = await ljRaw([bin, "--", "/bin/echo", "-n", "via", "ljspawn"], {
      ...process.env,
      LIGHTJAIL_ROOT: env.root,
      PATH: `${join(projectDir, ".tools/bin")}:${process.env.PATH}`,
    } as Record<string, string>);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("via ljspawn");
    expect(r.code).toBe(0);
  });
});

describe("jails and worlds from the command line", () => {
  rootTest("spawn -i auto without --egress: a connection outside is refused at once", async () => {
    // The "outside" is a network namespace of this test's, routed from the host: were the
    // jail's packets not refused, they would end there, never leaving the machine.
    const sh = (cmd: string) => Bun.spawnSync(["sh", "-c", cmd]).exitCode;
    const teardown = "ip netns del ljclt 2>/dev/null; ip link del ljclt0 2>/dev/null; true";
    sh(teardown);
    expect(
      sh(
        "ip netns add ljclt && ip link add ljclt0 type veth peer name ljclt1 netns ljclt && " +
          "ip addr add 198.51.100.1/30 dev ljclt0 && ip link set ljclt0 up && " +
          "ip -n ljclt addr add 198.51.100.2/30 dev ljclt1 && ip -n ljclt link set ljclt1 up && " +
          "ip route add 198.51.100.77/32 via 198.51.100.2",
      ),
    ).toBe(0);
    const started = performance.now();
    const r = await ljRaw(
      [
        process.execPath,
        cliPath,
        "spawn",
        "-i",
        "auto",
        "--",
        "/bin/bash",
        "-c",
        "exec 3<>/dev/tcp/198.51.100.77/9",
      ],
      { ...process.env, LIGHTJAIL_ROOT: env.root } as Record<string, string>,
    );
    sh(teardown);
    expect(r.stderr).toContain("No route to host");
    expect(r.code).not.toBe(0);
    // A dropped SYN would wait out TCP's retries (over a minute).
    expect(performance.now() - started).toBeLessThan(30_000);
  });

  rootTest("a jail spawned from a terminal gets a terminal of its own: tty works", async () => {
    const r = await ljOnPty(
      ["spawn", "--", "/bin/sh", "-c", "tty; stty size; echo ready; read x; echo got $x; exit 3"],
      { ...process.env, LIGHTJAIL_ROOT: env.root } as Record<string, string>,
      [{ after: "ready", type: "typed\r" }],
    );
    expect(r.output).toMatch(/^\/dev\/pts\/\d+\r$/m);
    expect(r.output).toContain("33 111");
    expect(r.output).toContain("got typed");
    expect(r.code).toBe(3);
    // In a user namespace the terminal belongs to the payload's uid as the jail sees it.
    chmodSync(env.root, 0o755); // searchable by the namespace's ids
    const u = await ljOnPty(
      ["spawn", "--userns", "--user", "1000:1000", "--", "/bin/sh", "-c", 'ls -ln "$(tty)"'],
      { ...process.env, LIGHTJAIL_ROOT: env.root } as Record<string, string>,
      [],
    );
    expect(u.output).toMatch(/^crw--w---- 1 1000 1000 .* \/dev\/pts\/\d+\r$/m);
    expect(u.code).toBe(0);
  });

  rootTest("world create keeps the default world, and says which it is", async () => {
    const root = temp("lj-worlds-");
    const e = { ...process.env, LIGHTJAIL_ROOT: root, NO_COLOR: "1" } as Record<string, string>;
    const first = await ljRaw([process.execPath, cliPath, "world", "create", "one", "--from", "host"], e);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain("one is the default world");
    const second = await ljRaw([process.execPath, cliPath, "world", "create", "two", "--from", "host"], e);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain("the default world is still one");
    expect((await ljRaw([process.execPath, cliPath, "world", "default"], e)).stdout).toBe("one\n");
  });
});

describe("lj logs -f", () => {
  test("a server that goes away is waited for, and followed again", async () => {
    const serve = (lines: string[]) =>
      Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: () =>
          new Response(
            new ReadableStream({
              start(c) {
                for (const l of lines) c.enqueue(new TextEncoder().encode(`${l}\n`));
              },
            }),
          ),
      });
    let srv = serve(["first line"]);
    const port = srv.port;
    const p = Bun.spawn([process.execPath, cliPath, "logs", "-f", "someapp"], {
      env: userEnv(temp("lj-client-cfg-"), { LJ_REMOTE: `http://127.0.0.1:${port}`, LJ_TOKEN: "t" }),
      stdout: "pipe",
      stderr: "pipe",
    });
    let out = "";
    let err = "";
    void (async () => {
      for await (const c of p.stdout) out += new TextDecoder().decode(c);
    })();
    void (async () => {
      for await (const c of p.stderr) err += new TextDecoder().decode(c);
    })();
    await until(() => out.includes("first line"), 20_000, "the first line");
    srv.stop(true);
    await until(() => err.includes("the server went away"), 20_000, "the notice");
    srv = Bun.serve({
      hostname: "127.0.0.1",
      port,
      fetch: () => new Response("after the restart\n"),
    });
    await until(() => out.includes("after the restart"), 20_000, "the line after the restart");
    p.kill();
    srv.stop(true);
    expect(err).not.toContain("internal error");
    expect(err).toContain("reconnected");
  });
});
