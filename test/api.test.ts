/**
 * The HTTP API without root: createApi over a PaaS with a fake spawner, requests through
 * Hono's request() (no listener). Statuses, error bodies, limits and streams; the work behind
 * them is tested in test/paas-units.test.ts, real jails in test/paas.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import type { Hono } from "hono";
import { createApi } from "../src/server/api.ts";
import { paths } from "../src/store/paths.ts";
import { type FakePaas, fakePaas } from "./helpers/fake-paas.ts";
import { makeTar } from "./helpers/tar.ts";

let f: FakePaas;
// biome-ignore lint/suspicious/noExplicitAny: the API's env type is the server's
let api: Hono<any>;
const token = "lj_test";
const MAX_UPLOAD = 64 * 1024;

beforeAll(() => {
  f = fakePaas();
  api = createApi({
    paas: f.paas,
    services: f.paas.services,
    token,
    domain: "localhost",
    selfUrl: () => "http://127.0.0.1:7000",
    maxUploadBytes: MAX_UPLOAD,
  });
});
afterAll(async () => {
  await f.close();
});

const auth = { authorization: `Bearer ${token}` };
const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  api.request(`/api/v1${path}`, {
    method,
    headers: { ...auth, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const errorOf = async (r: Response) =>
  ((await r.json()) as { error: { code: string; message: string } }).error;
const tarball = async (procfile: string) => makeTar([{ name: "Procfile", body: procfile }]);
/** An upload without Content-Length: the limit counts it as it comes. */
const chunked = (bytes: Uint8Array) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i += 8192) c.enqueue(bytes.subarray(i, i + 8192));
      c.close();
    },
  });

describe("auth and errors", () => {
  test("health needs no token; everything else does", async () => {
    expect((await api.request("/api/v1/health")).status).toBe(200);
    const none = await api.request("/api/v1/apps");
    expect([none.status, (await errorOf(none)).code]).toEqual([401, "auth-required"]);
    const wrong = await api.request("/api/v1/apps", { headers: { authorization: "Bearer nope" } });
    expect([wrong.status, (await errorOf(wrong)).code]).toEqual([401, "bad-token"]);
    expect(wrong.headers.get("www-authenticate")).toContain("Bearer");
  });

  test("an unknown route is a 404 with a hint", async () => {
    const r = await call("GET", "/nothing");
    expect(r.status).toBe(404);
    expect(await errorOf(r)).toMatchObject({ code: "no-route", message: "no route GET /api/v1/nothing" });
  });

  test("statuses follow the error: 400, 404, 409", async () => {
    expect((await call("POST", "/apps", { name: "Bad_Name" })).status).toBe(400);
    expect((await call("POST", "/apps", { name: "e1" })).status).toBe(201);
    expect((await call("POST", "/apps", { name: "e1" })).status).toBe(409);
    const missing = await call("GET", "/apps/none");
    expect([missing.status, (await errorOf(missing)).code]).toEqual([404, "app-not-found"]);
    const bad = await api.request("/api/v1/apps", { method: "POST", headers: auth, body: "{" });
    expect([bad.status, (await errorOf(bad)).code]).toEqual([400, "bad-json"]);
  });

  test("JSON bodies over 64 KiB are refused with 413", async () => {
    const r = await call("POST", "/apps", { name: "x".repeat(100_000) });
    expect([r.status, (await errorOf(r)).code]).toEqual([413, "body-too-large"]);
    const cfg = await call("PATCH", "/apps/e1/config", { K: "v".repeat(70_000) });
    expect(cfg.status).toBe(413);
  });
});

describe("deploys", () => {
  test("an upload streams the deploy log and names the deploy", async () => {
    await call("POST", "/apps", { name: "d1" });
    const r = await api.request("/api/v1/apps/d1/source", {
      method: "PUT",
      headers: auth,
      body: await tarball("web: x\n"),
    });
    expect(r.status).toBe(200);
    const id = r.headers.get("x-deploy-id");
    const text = await r.text();
    expect(text).toContain("-----> Received 1 entries");
    expect(text.trimEnd().split("\n").at(-1)).toBe(`=====> deploy ${id} succeeded: release v1 is serving`);
    const info = (await (await call("GET", `/deploys/${id}`)).json()) as { status: string; log: string[] };
    expect(info.status).toBe("succeeded");
    const log = await (await call("GET", `/deploys/${id}/log?follow=1`)).text();
    expect(log).toBe(`${info.log.join("\n")}\n`);
  });

  test("?wait=json answers the finished deploy: 200, or 422 when it failed", async () => {
    await call("POST", "/apps", { name: "d2" });
    const put = async (body: Uint8Array) =>
      api.request("/api/v1/apps/d2/source?wait=json&source=label", { method: "PUT", headers: auth, body });
    const ok = await put(await tarball("web: x\n"));
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { deploy: { source: string } }).deploy.source).toBe("label");
    const failed = await put(await makeTar([{ name: "FAIL_BUILD", body: "" }]));
    expect(failed.status).toBe(422);
  });

  test("a malicious archive is 422 with its rule; nothing is written", async () => {
    await call("POST", "/apps", { name: "d3" });
    const body = await makeTar([{ name: "/etc/evil", body: "x" }]);
    const r = await api.request("/api/v1/apps/d3/source", { method: "PUT", headers: auth, body });
    expect([r.status, (await errorOf(r)).code]).toEqual([422, "archive-absolute-path"]);
    expect(readdirSync(paths.paasIncoming())).toEqual([]);
  });

  test("an upload over the cap is 413 with or without a length, and the app's log says so", async () => {
    await call("POST", "/apps", { name: "d4" });
    const big = crypto.getRandomValues(new Uint8Array(MAX_UPLOAD + 1));
    const sized = await api.request("/api/v1/apps/d4/source", {
      method: "PUT",
      headers: { ...auth, "content-length": String(big.length) },
      body: big,
    });
    expect([sized.status, (await errorOf(sized)).code]).toEqual([413, "upload-too-large"]);
    const streamed = await api.request(
      new Request("http://x/api/v1/apps/d4/source", {
        method: "PUT",
        headers: auth,
        body: chunked(big),
        duplex: "half",
      } as RequestInit),
    );
    expect([streamed.status, (await errorOf(streamed)).code]).toEqual([413, "upload-too-large"]);
    const refusals = f.paas.logs.tail("d4", 10).filter((l) => l.line.startsWith("upload refused"));
    expect(refusals.length).toBe(2);
    expect(f.paas.deploys.list("d4")).toEqual([]);
  });

  test("an upload to an unknown app is 404 before it is read", async () => {
    const r = await api.request("/api/v1/apps/ghost/source", {
      method: "PUT",
      headers: { ...auth, "content-length": String(MAX_UPLOAD * 2) },
      body: new Uint8Array(MAX_UPLOAD * 2),
    });
    expect([r.status, (await errorOf(r)).code]).toEqual([404, "app-not-found"]);
  });
});

describe("config, processes, releases, logs", () => {
  test("config, formation, ps, releases and rollback answer as documented", async () => {
    await call("POST", "/apps", { name: "c1" });
    const put = async (procfile: string) =>
      api.request("/api/v1/apps/c1/source?wait=json", {
        method: "PUT",
        headers: auth,
        body: await tarball(procfile),
      });
    await put("web: one\nworker: w\n");
    await put("web: two\nworker: w\n");
    const cfg = await call("PATCH", "/apps/c1/config", { A: "1" });
    expect(await cfg.json()).toEqual({ config: { A: "1" }, release: 3 });
    const scaled = (await (await call("PATCH", "/apps/c1/formation", { worker: 1 })).json()) as {
      formation: Record<string, { count: number }>;
      processes: { name: string }[];
    };
    expect(scaled.formation.worker).toEqual({ count: 1 });
    expect(scaled.processes.map((p) => p.name).sort()).toEqual(["web.1", "worker.1"]);
    const bad = await call("PATCH", "/apps/c1/formation", { web: -1 });
    expect([bad.status, (await errorOf(bad)).code]).toEqual([400, "bad-formation"]);
    const rels = (await (await call("GET", "/apps/c1/releases")).json()) as {
      releases: { version: number; current: boolean }[];
    };
    expect(rels.releases.map((r) => [r.version, r.current])).toEqual([
      [3, true],
      [2, false],
      [1, false],
    ]);
    const rb = await call("POST", "/apps/c1/rollback", { version: "v1" });
    expect(((await rb.json()) as { release: { version: number } }).release.version).toBe(4);
  });

  test("logs: the latest lines, as text or JSON", async () => {
    await call("POST", "/apps", { name: "l1" });
    f.paas.logs.write("l1", "web.1", "first");
    f.paas.logs.write("l1", "web.1", "second");
    const text = await (await call("GET", "/apps/l1/logs?lines=1")).text();
    expect(text).toMatch(/ web\.1: second\n$/);
    const json = (await (await call("GET", "/apps/l1/logs?format=json")).text()).trim().split("\n");
    expect(json.map((l) => JSON.parse(l).line)).toEqual(["first", "second"]);
  });

  test("logs?follow=1 sends new lines as they come", async () => {
    await call("POST", "/apps", { name: "l2" });
    const r = await call("GET", "/apps/l2/logs?follow=1");
    const reader = r.body!.getReader();
    f.paas.logs.write("l2", "web.1", "live");
    const { value } = await reader.read();
    expect(new TextDecoder().decode(value)).toMatch(/ web\.1: live\n$/);
    await reader.cancel();
  });

  test("a one-off run streams NDJSON frames and its exit", async () => {
    await call("POST", "/apps", { name: "o1" });
    await api.request("/api/v1/apps/o1/source?wait=json", {
      method: "PUT",
      headers: auth,
      body: await tarball("web: x\n"),
    });
    f.spawner.behave = () => ({ output: ["hello"], exitCode: 0 });
    try {
      const r = await call("POST", "/apps/o1/run", { command: "echo hello" });
      const frames = (await r.text())
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      expect(frames).toEqual([{ out: "hello\n" }, { exit: 0, reason: "exit" }]);
    } finally {
      f.spawner.behave = () => ({ listens: true });
    }
  });
});
