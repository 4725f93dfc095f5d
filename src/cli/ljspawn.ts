#!/usr/bin/env bun
/** `ljspawn`: the seed's name for `lj spawn`, with the same flags. */
import { runEntry } from "./lj.ts";

process.exit(await runEntry(["spawn", ...process.argv.slice(2)], "ljspawn"));
