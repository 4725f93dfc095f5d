import { describe, expect, test } from "bun:test";
import { commandArgv } from "../../src/paas/process-spec.ts";

describe("commandArgv: a process's command runs without a shell when it needs none", () => {
  test("plain words are the argv", () => {
    expect(commandArgv("node server.js")).toEqual(["node", "server.js"]);
    expect(commandArgv("  bundle exec puma -p 5000 ")).toEqual(["bundle", "exec", "puma", "-p", "5000"]);
    expect(commandArgv("./bin/web --port=5000")).toEqual(["./bin/web", "--port=5000"]);
    expect(commandArgv("/opt/lj/bin/lj-static-server /app")).toEqual([
      "/opt/lj/bin/lj-static-server",
      "/app",
    ]);
  });

  test("anything a shell would interpret goes to /bin/sh -c", () => {
    for (const cmd of [
      "python3 -m http.server $PORT",
      "exec node server.js",
      "cd web && node server.js",
      "PORT=1 node server.js",
      "node server.js > log",
      "ruby x.rb | tee out",
      "echo 'quoted words'",
      "node ~/server.js",
      "node *.js",
      "sleep 1; node server.js",
      "`which node` server.js",
    ]) {
      expect(commandArgv(cmd)).toEqual(["/bin/sh", "-c", cmd]);
    }
  });
});
