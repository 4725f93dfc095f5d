//! A small pool of fresh, empty network namespaces (loopback up), made ahead of time.
//! Creating a network namespace is the most expensive step of a Linux jail (the kernel
//! initialises every protocol's per-namespace state); with a pooled one the jail's child
//! only calls `setns`, and the creation has already happened in parallel with earlier work.
//!
//! Each namespace is used by exactly one jail: never shared, never reused, so it isolates
//! exactly like one the jail would have unshared itself. The Bun process's own namespaces are
//! never touched: every namespace is made by a short-lived child that shares our memory and
//! descriptor table (so the reference it opens is ours), unshares, opens, and exits. Children
//! are started from the spawn path, cost it one clone each, and are collected on a later call.
//!
//! Not thread-safe by itself: callers hold the spawn lock.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const W_ALL = sys.W_ALL;

const pool_size = 6;

const State = enum(u8) { empty, making, ready };

const Slot = struct {
    state: State = .empty,
    pid: i32 = 0,
    /// Cleared by the kernel when the maker exits (CLONE_CHILD_CLEARTID).
    ctid: i32 align(4) = 0,
    fd: i32 = -1,
    stack: [8 * 1024]u8 align(16) = undefined,
};

var slots: [pool_size]Slot = [_]Slot{.{}} ** pool_size;
/// Set when a maker failed (no permission, say): jails then unshare their own.
var broken = false;

/// Collects finished makers, hands out a ready namespace (the caller owns the descriptor, or
/// gets -1 and unshares one itself), and starts makers for empty slots.
pub fn take() i32 {
    if (broken) return -1;
    collect();
    var got: i32 = -1;
    for (&slots) |*s| {
        if (s.state == .ready) {
            got = s.fd;
            s.* = .{};
            break;
        }
    }
    refill();
    return got;
}

fn collect() void {
    for (&slots) |*s| {
        if (s.state != .making or @atomicLoad(i32, &s.ctid, .acquire) != 0) continue;
        var status: u32 = 0;
        _ = linux.wait4(s.pid, &status, W_ALL | linux.W.NOHANG, null);
        if (s.fd >= 0) {
            s.state = .ready;
        } else {
            broken = true;
            s.* = .{};
        }
    }
}

fn refill() void {
    // Bun's handlers must not run on a maker's stack: makers run with every signal blocked.
    const all = linux.sigfillset();
    var old: linux.sigset_t = undefined;
    _ = linux.sigprocmask(linux.SIG.SETMASK, &all, &old);
    defer _ = linux.sigprocmask(linux.SIG.SETMASK, &old, null);
    for (&slots) |*s| {
        if (s.state != .empty) continue;
        s.fd = -1;
        s.ctid = 1;
        // No exit signal: Bun never hears of these children; collect() reaps them.
        const flags: u32 = linux.CLONE.VM | linux.CLONE.FILES | linux.CLONE.CHILD_CLEARTID;
        const pid = linux.clone(maker, @intFromPtr(&s.stack) + s.stack.len, flags, @intFromPtr(s), null, 0, &s.ctid);
        if (linux.E.init(pid) != .SUCCESS) return;
        s.pid = @intCast(pid);
        s.state = .making;
    }
}

/// The maker: a child sharing our memory and descriptor table.
fn maker(arg: usize) callconv(.c) u8 {
    sys.noCoreDumps();
    const s: *Slot = @ptrFromInt(arg);
    if (linux.E.init(linux.unshare(linux.CLONE.NEWNET)) != .SUCCESS) return 1;
    const sock = linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (linux.E.init(sock) != .SUCCESS) return 1;
    var req = std.mem.zeroes(linux.ifreq);
    @memcpy(req.ifrn.name[0..2], "lo");
    var ok = linux.E.init(linux.ioctl(@intCast(sock), linux.SIOCGIFFLAGS, @intFromPtr(&req))) == .SUCCESS;
    req.ifru.flags.UP = true;
    req.ifru.flags.RUNNING = true;
    ok = ok and linux.E.init(linux.ioctl(@intCast(sock), linux.SIOCSIFFLAGS, @intFromPtr(&req))) == .SUCCESS;
    _ = linux.close(@intCast(sock));
    if (!ok) return 1;
    // The descriptor table is shared, so this reference outlives the maker.
    const fd = linux.open("/proc/self/ns/net", .{ .CLOEXEC = true }, 0);
    if (linux.E.init(fd) != .SUCCESS) return 1;
    @atomicStore(i32, &s.fd, @intCast(fd), .release);
    return 0;
}
