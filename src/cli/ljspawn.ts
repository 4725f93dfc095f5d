#!/usr/bin/env bun
/** `ljspawn`: the seed's name for `lj spawn`, with the same flags. */
import { runCli } from "./main.ts";

process.exit(await runCli(["spawn", ...process.argv.slice(2)], "ljspawn"));
