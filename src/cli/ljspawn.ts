#!/usr/bin/env bun
/** `ljspawn`: the seed's name for `lj spawn`, with the same flags. */
import { rawArgv, runEntry } from "./lj.ts";

process.exit(await runEntry(["spawn", ...rawArgv()], "ljspawn"));
