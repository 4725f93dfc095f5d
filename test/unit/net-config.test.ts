/** A root's network settings from config.toml's [net], read again whenever the file changes. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { netConfig } from "../../src/jail/net-alloc.ts";

const root = mkdtempSync(join(tmpdir(), "lj-netcfg-"));
const env = { LIGHTJAIL_ROOT: root };
const config = join(root, "config.toml");
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("netConfig", () => {
  test("defaults without a config.toml, then what [net] says, following every change", () => {
    expect(netConfig(env).subnet.cidr).toBe("10.233.0.0/16");
    writeFileSync(config, '[net]\nsubnet = "10.231.4.0/24"\ngateway_ports = ["53/udp"]\n');
    let cfg = netConfig(env);
    expect(cfg.subnet.cidr).toBe("10.231.4.0/24");
    expect(cfg.gatewayPorts).toEqual([{ port: 53, proto: "udp" }]);
    // Changed in place: the next reading sees it.
    writeFileSync(
      config,
      '[net]\nsubnet = "10.231.4.0/24"\ngateway_ports = ["8125", "53/udp"]\nuplinks = ["eth9"]\n',
    );
    cfg = netConfig(env);
    expect(cfg.gatewayPorts).toEqual([
      { port: 8125, proto: "tcp" },
      { port: 53, proto: "udp" },
    ]);
    expect(cfg.uplinks).toEqual(["eth9"]);
    rmSync(config);
    expect(netConfig(env).gatewayPorts).toEqual([]);
  });

  test("a config.toml that does not parse is refused, naming it", () => {
    writeFileSync(config, "[net\nsubnet = \n");
    expect(() => netConfig(env)).toThrow(`cannot parse ${config}`);
    rmSync(config);
  });
});
