//! The C ABI of the lightjail shim. TypeScript reaches it only through src/jail/ffi.ts.
//!
//! Every export returns 0 or a positive errno and, on failure, writes a NUL-terminated text
//! naming the failing step and path into the caller's buffer. Nothing allocated here crosses
//! the boundary; every out-parameter is caller-owned.
const std = @import("std");

/// A failed safety check ends only the process it happens in, at once (see panic.zig).
pub const panic = std.debug.FullPanic(@import("src/panic.zig").handler);
const builtin = @import("builtin");
const abi = @import("src/abi.zig");
const spec_mod = @import("src/spec.zig");
const errtext = @import("src/errtext.zig");

const backend = switch (builtin.os.tag) {
    .linux => @import("src/linux.zig"),
    .freebsd => @import("src/freebsd.zig"),
    else => @compileError("lightjail supports Linux and FreeBSD"),
};

export fn lj_abi_version() u32 {
    return abi.abi_version;
}

/// Decodes the spec, creates the jail and starts its setup. Setup failures inside the jail
/// arrive later as an "E" line on the status pipe; failures before the fork are returned here.
export fn lj_spawn(spec_ptr: [*]const u8, spec_len: usize, out: *abi.SpawnOut, err_ptr: [*]u8, err_len: usize) c_int {
    const err = errtext.CBuf{ .ptr = err_ptr, .len = err_len };
    // A backend that copies the raw spec for its child decodes it there itself.
    if (@hasDecl(backend, "spawnRaw")) return backend.spawnRaw(spec_ptr[0..spec_len], out, err);
    var spec = spec_mod.Spec{};
    var failure: spec_mod.DecodeFailure = undefined;
    spec_mod.decode(spec_ptr[0..spec_len], &spec, &failure) catch |e| {
        return err.set(@intFromEnum(std.posix.E.INVAL), "invalid jail spec (record {d}): {s}", .{ failure.tag, @errorName(e) });
    };
    return backend.spawn(&spec, out, err);
}

/// Reaps the jail's first process. With `nohang`, returns EAGAIN while it still runs.
export fn lj_reap(pid: i32, nohang: c_int, status: *i32, err_ptr: [*]u8, err_len: usize) c_int {
    return backend.reap(pid, nohang != 0, status, .{ .ptr = err_ptr, .len = err_len });
}

/// Detaches a leftover mount (garbage collection after a crashed owner).
export fn lj_unmount(path: [*:0]const u8, err_ptr: [*]u8, err_len: usize) c_int {
    return backend.unmount(path, .{ .ptr = err_ptr, .len = err_len });
}

/// Removes the kernel-side leftovers of a jail whose owner died (FreeBSD: the jail by name and
/// its RCTL rules; Linux: nothing survives its namespaces).
export fn lj_cleanup(name: [*:0]const u8, err_ptr: [*]u8, err_len: usize) c_int {
    return backend.cleanup(name, .{ .ptr = err_ptr, .len = err_len });
}

/// A process's start time (its identity across pid reuse) in microseconds since boot.
/// FreeBSD: kern.proc.pid (ki_start) less kern.boottime. Linux reads /proc/PID/stat from
/// TypeScript and has no need of it: ENOSYS.
export fn lj_proc_start(pid: i32, out: *u64, err_ptr: [*]u8, err_len: usize) c_int {
    const err = errtext.CBuf{ .ptr = err_ptr, .len = err_len };
    if (@hasDecl(backend, "procStart")) return backend.procStart(pid, out, err);
    return err.set(@intFromEnum(std.posix.E.NOSYS), "process start times come from /proc on this platform", .{});
}

/// The owner's side of private addresses (Linux, netwire.zig): a jail's filter elements, links
/// and guards in one nftables transaction, and the release of finished jails' host veths.
export fn lj_net(req_ptr: [*]const u8, req_len: usize, err_ptr: [*]u8, err_len: usize) c_int {
    const err = errtext.CBuf{ .ptr = err_ptr, .len = err_len };
    if (builtin.os.tag != .linux) {
        return err.set(@intFromEnum(std.posix.E.NOSYS), "private addresses are wired by ifconfig and pf on this platform", .{});
    } else {
        const f = @import("src/netwire.zig").run(req_ptr[0..req_len]) orelse return 0;
        return err.set(@intFromEnum(f.e), "{s} {s}", .{ f.step, f.what });
    }
}

/// Where jails' cgroups live (Linux, src/cgroup_layout.zig): from `info` (mountinfo text; when
/// empty, this process's), made ready when `prepare` is set, written NUL-terminated into `out`
/// as "VERSION\nHIERARCHY DIR\n...". FreeBSD limits jails with RCTL: ENOSYS.
export fn lj_cgroup_layout(info_ptr: [*]const u8, info_len: usize, prepare: c_int, out_ptr: [*]u8, out_len: usize, err_ptr: [*]u8, err_len: usize) c_int {
    const err = errtext.CBuf{ .ptr = err_ptr, .len = err_len };
    if (builtin.os.tag != .linux) {
        return err.set(@intFromEnum(std.posix.E.NOSYS), "jails' limits are RCTL rules on this platform", .{});
    } else {
        const layout_mod = @import("src/cgroup_layout.zig");
        const gpa = std.heap.page_allocator;
        const own = if (info_len == 0) std.fs.cwd().readFileAlloc(gpa, "/proc/self/mountinfo", 1 << 22) catch |e| {
            return err.set(@intFromEnum(std.posix.E.IO), "read /proc/self/mountinfo: {s}", .{@errorName(e)});
        } else null;
        defer if (own) |o| gpa.free(o);
        const layout = layout_mod.detect(own orelse info_ptr[0..info_len]);
        if (prepare != 0) if (layout_mod.prepare(&layout)) |f| {
            return err.set(@intFromEnum(f.e), "{s} {s}", .{ f.what, f.path.buf[0..f.path.len] });
        };
        if (out_len == 0) return err.set(@intFromEnum(std.posix.E.NOSPC), "no room for the layout", .{});
        var w = std.Io.Writer.fixed(out_ptr[0 .. out_len - 1]);
        layout.write(&w) catch return err.set(@intFromEnum(std.posix.E.NOSPC), "no room for the layout", .{});
        out_ptr[w.end] = 0;
        return 0;
    }
}

/// The rules of a root's private addresses (Linux, netlease.zig): its names, the registry of
/// live roots, the address leases. `op` picks the operation, `req` holds its NUL-separated
/// arguments, and the answer is JSON in `out` (its length in `out_len`). A refusal (an address
/// in use, a full subnet, a conflicting root) is errno EPERM with "kind\tcode\tmessage\thint"
/// as its text; an answer too large for `out` is ERANGE with the size it needs in `out_len`.
export fn lj_lease(op: u32, req_ptr: [*]const u8, req_len: usize, out_ptr: [*]u8, out_len: *usize, err_ptr: [*]u8, err_len: usize) c_int {
    const err = errtext.CBuf{ .ptr = err_ptr, .len = err_len };
    if (builtin.os.tag != .linux) {
        return err.set(@intFromEnum(std.posix.E.NOSYS), "private addresses are leased by the FreeBSD backend's own rules", .{});
    } else {
        const netlease = @import("src/netlease.zig");
        // The namespace pool's veths (the lease of an address may take one's name).
        const args = req_ptr[0..req_len];
        if (op == @intFromEnum(netlease.Op.pool_claim) or op == @intFromEnum(netlease.Op.pool_unclaim) or op == @intFromEnum(netlease.Op.pool_drain)) {
            var answer: []const u8 = "null";
            var buf: [96]u8 = undefined;
            if (op == @intFromEnum(netlease.Op.pool_unclaim)) {
                backend.unclaimPooledVeth(args);
            } else if (op == @intFromEnum(netlease.Op.pool_drain)) {
                backend.drainPool();
            } else {
                // prefix, then (once the root's table exists) root, subnet, owner, the address
                // the jail asks for ("" or "auto": any), and (tests) a step the makers' wiring
                // fails at.
                var it = std.mem.splitScalar(u8, args, 0);
                const prefix = it.next() orelse "";
                const root = it.next() orelse "";
                const subnet = it.next() orelse "";
                const owner = it.next() orelse "";
                const want_text = it.next() orelse "";
                const fail_at = std.fmt.parseInt(u8, it.next() orelse "0", 10) catch 0;
                var fallback = std.heap.stackFallback(8 * 1024, std.heap.page_allocator);
                var arena = std.heap.ArenaAllocator.init(fallback.get());
                defer arena.deinit();
                var why: netlease.Why = .{};
                var plan: ?backend.PoolPlan = null;
                if (root.len > 0) {
                    if (netlease.config(arena.allocator(), root, subnet, "subnet", &why)) |c| {
                        plan = backend.PoolPlan.of(&c, owner, fail_at);
                    } else |_| {}
                }
                var want: u32 = 0;
                if (want_text.len > 0 and !std.mem.eql(u8, want_text, "auto")) {
                    const slash = std.mem.indexOfScalar(u8, want_text, '/') orelse want_text.len;
                    want = netlease.parseIp(want_text[0..slash]) orelse 0;
                }
                var name: [16]u8 = undefined;
                if (backend.claimPooledVeth(prefix, if (plan) |*p| p else null, want, &name)) |got| {
                    var ab: [16]u8 = undefined;
                    const addr = if (got.address != 0) netlease.formatIp(&ab, got.address) else "";
                    answer = std.fmt.bufPrint(&buf, "{{\"veth\":\"{s}\",\"address\":\"{s}\"}}", .{ got.name, addr }) catch unreachable;
                }
            }
            if (out_len.* < answer.len) return err.set(@intFromEnum(std.posix.E.RANGE), "lease answer", .{});
            @memcpy(out_ptr[0..answer.len], answer);
            out_len.* = answer.len;
            return 0;
        }
        // Most requests fit in a stack buffer: no mapping made and unmapped per call.
        var fallback = std.heap.stackFallback(32 * 1024, std.heap.page_allocator);
        var arena = std.heap.ArenaAllocator.init(fallback.get());
        defer arena.deinit();
        var why: netlease.Why = .{};
        switch (netlease.call(arena.allocator(), op, args, out_ptr[0..out_len.*], &why)) {
            .ok => |n| {
                out_len.* = n;
                return 0;
            },
            .too_small => |n| {
                out_len.* = n;
                return err.set(@intFromEnum(std.posix.E.RANGE), "lease answer of {d} bytes", .{n});
            },
            .refused => {
                _ = errtext.format(err.slice(), 0, "{s}\t{s}\t{s}\t{s}", .{ @tagName(why.kind), why.code, why.message(), why.hint() });
                return @intFromEnum(std.posix.E.PERM);
            },
            .failed => |f| return err.set(@intFromEnum(f.e), "{s} {s}", .{ f.step, f.what }),
        }
    }
}

test {
    _ = spec_mod;
    _ = @import("src/hide.zig");
    _ = errtext;
}
