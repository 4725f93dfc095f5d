//! The Linux backend: a jail is a set of fresh namespaces (mount, pid, uts, ipc, cgroup and,
//! unless the host network is asked for, net) around a root assembled from overlayfs, with a
//! fresh /proc, a minimal /dev and a tmpfs /tmp, entered with pivot_root.
//!
//! Threading rule: Bun is multithreaded, so lj_spawn never changes the calling process. It
//! clones a child (a copy of the calling thread only) which does all the work with raw
//! syscalls: no allocator, no locks, no libc. The child ends by executing the keeper from a
//! sealed memfd, which drops every trace of the Bun process. This file is the process (the
//! owner's spawn, the child's order of steps, the keeper); the root's mounts are
//! linux_mounts.zig and the cgroups linux_cgroups.zig.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const W_ALL = sys.W_ALL;
const F_DUPFD_CLOEXEC = sys.F_DUPFD_CLOEXEC;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const ns_pool = @import("ns_pool.zig");
const warm = @import("warm.zig");
const hide = @import("hide.zig");
const idmap = @import("idmap.zig");
const clone3 = @import("clone3.zig");
const netwire = @import("netwire.zig");

const Spec = spec_mod.Spec;
const keeper_elf = @embedFile("keeper_bin");

const O = linux.O;
const child_mod = @import("linux_child.zig");
const Child = child_mod.Child;
const Path = child_mod.Path;
const errnoCode = child_mod.errnoCode;
const cgroups = @import("linux_cgroups.zig");
const mounts = @import("linux_mounts.zig");

// ---------------------------------------------------------------------------------------
// The keeper executable, written once per process into a sealed, executable memfd.

var keeper_fd = std.atomic.Value(i32).init(-1);

fn keeperFd(err: errtext.CBuf) !i32 {
    const have = keeper_fd.load(.acquire);
    if (have >= 0) return have;
    const MFD_EXEC = 0x0010;
    var rc = linux.memfd_create("lj-keeper", linux.MFD.CLOEXEC | linux.MFD.ALLOW_SEALING | MFD_EXEC);
    // Kernels before 6.3 do not know MFD_EXEC; their memfds are executable anyway.
    if (errno(rc) == .INVAL) rc = linux.memfd_create("lj-keeper", linux.MFD.CLOEXEC | linux.MFD.ALLOW_SEALING);
    if (errno(rc)) |e| return fail(err, e, "memfd_create keeper", .{});
    // Keep it clear of the descriptors a jail's child places (0-2, 3, passed ones from 4).
    const low: i32 = @intCast(rc);
    const high = linux.fcntl(low, F_DUPFD_CLOEXEC, 64);
    _ = linux.close(low);
    if (errno(high)) |e| return fail(err, e, "move keeper memfd", .{});
    const fd: i32 = @intCast(high);
    var off: usize = 0;
    while (off < keeper_elf.len) {
        const w = linux.write(fd, keeper_elf[off..].ptr, keeper_elf.len - off);
        if (errno(w)) |e| {
            if (e == .INTR) continue;
            _ = linux.close(fd);
            return fail(err, e, "write keeper memfd", .{});
        }
        off += w;
    }
    const F_ADD_SEALS = 1033;
    const seals = 0x1 | 0x2 | 0x4 | 0x8; // SEAL, SHRINK, GROW, WRITE
    if (errno(linux.fcntl(fd, F_ADD_SEALS, seals))) |e| {
        _ = linux.close(fd);
        return fail(err, e, "seal keeper memfd", .{});
    }
    if (keeper_fd.cmpxchgStrong(-1, fd, .acq_rel, .acquire)) |other| {
        _ = linux.close(fd); // another thread won the race
        return other;
    }
    return fd;
}

// ---------------------------------------------------------------------------------------
// A pidfd of the owner (this process), opened once: a jail's child polls it to learn whether
// its owner died before the child asked for the parent-death signal (-1: the kernel has no
// pidfds; the child then relies on the signal and the sync pipe alone).

var owner_pidfd = std.atomic.Value(i32).init(-2);

fn ownerPidfd() i32 {
    const have = owner_pidfd.load(.acquire);
    if (have != -2) return have;
    const rc = linux.syscall2(.pidfd_open, @intCast(linux.getpid()), 0); // close-on-exec
    const fd: i32 = if (errno(rc) == null) @intCast(rc) else -1;
    if (owner_pidfd.cmpxchgStrong(-2, fd, .acq_rel, .acquire)) |other| {
        if (fd >= 0) _ = linux.close(fd);
        return other;
    }
    return fd;
}

fn fail(err: errtext.CBuf, e: linux.E, comptime fmt: []const u8, args: anytype) error{Failed} {
    _ = err.set(errnoCode(e), fmt, args);
    last_errno = errnoCode(e);
    return error.Failed;
}

threadlocal var last_errno: u16 = 0;

// ---------------------------------------------------------------------------------------
// Parent side.

/// Spawning clones with CLONE_VM, like posix_spawn: the Bun thread pays neither for copying
/// Bun's page tables nor for creating namespaces (the child unshares them itself), so a spawn
/// costs the event loop tens of microseconds. The child runs on its own stack in a private
/// region that also holds its copy of the spec; the region is free again once the kernel reports
/// (CLONE_CHILD_CLEARTID) that the child has executed the keeper or died. A few free regions are
/// kept for the next jails: their pages are already faulted in, which a fresh mapping would
/// pay for page by page (dearly on a virtual machine).
const region_size = 1 << 20;

/// One-shot callers (the native ljspawn) turn the namespace pool off: it would only make
/// namespaces to throw away.
pub var ns_pool_enabled = true;

/// A pooled veth of the root `prefix` set aside for the jail about to be leased with its name,
/// with the address its maker wired it with, if any (ns_pool.claim; `plan`: the root's, once
/// its filter table exists, so that the next makers wire addresses too); null when none is
/// ready. `unclaim` gives one back whose jail was never spawned; `drainPool` gives back every
/// set wired with an address.
pub fn claimPooledVeth(prefix: []const u8, plan: ?*const ns_pool.Plan, want: u32, out: *[16]u8) ?ns_pool.Claimed {
    if (!ns_pool_enabled) return null;
    regions_lock.lock();
    defer regions_lock.unlock();
    return ns_pool.claim(prefix, plan, want, out);
}

pub fn unclaimPooledVeth(name: []const u8) void {
    regions_lock.lock();
    defer regions_lock.unlock();
    ns_pool.unclaim(name);
}

pub const PoolPlan = ns_pool.Plan;

pub fn drainPool() void {
    regions_lock.lock();
    defer regions_lock.unlock();
    ns_pool.drain();
}

const Region = struct {
    /// Non-zero while the child may still use the region; the kernel zeroes it at exec/exit.
    ctid: i32 align(4) = 0,
    addr: usize = 0,
};

var regions: [1024]Region = [_]Region{.{}} ** 1024;
var regions_lock: std.Thread.Mutex = .{};

var spare: [8]usize = undefined;
var spare_len: usize = 0;

/// Keeps a free region for reuse, or unmaps it. Callers hold regions_lock.
fn releaseRegion(addr: usize) void {
    if (spare_len < spare.len) {
        spare[spare_len] = addr;
        spare_len += 1;
    } else _ = linux.munmap(@ptrFromInt(addr), region_size);
}

/// Frees the regions of children that have executed the keeper or died.
fn sweepRegions() void {
    for (&regions) |*r| {
        if (r.addr != 0 and @atomicLoad(i32, &r.ctid, .acquire) == 0) {
            releaseRegion(r.addr);
            r.addr = 0;
        }
    }
}

/// A region for a new child: a spare one, or a fresh mapping (an mmap return value).
fn acquireRegion() usize {
    regions_lock.lock();
    defer regions_lock.unlock();
    sweepRegions();
    if (spare_len > 0) {
        spare_len -= 1;
        return spare[spare_len];
    }
    return linux.mmap(null, region_size, linux.PROT.READ | linux.PROT.WRITE, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true }, -1, 0);
}

fn claimRegion(addr: usize) ?*Region {
    for (&regions) |*r| {
        if (r.addr == 0) {
            r.addr = addr;
            r.ctid = 1;
            return r;
        }
    }
    return null;
}

/// What the child needs, placed at the start of its region.
const ChildCtx = struct {
    spec: Spec,
    fds: ChildFds,
    /// User-namespaced jails wait on this futex word until the owner has written their id
    /// maps: 1 = go, 2 = abort.
    userns_go: u32 align(4) = 0,
    /// User-namespaced jails: the idmapped layers and binds the owner made (idmap.zig).
    trees: idmap.Trees = .{},
    /// Traced jails: when the owner called the shim, and when the shim was about to clone.
    spawn_ns: u64 = 0,
    clone_ns: u64 = 0,
    /// The kernel started the child in its cgroup (clone3 with CLONE_INTO_CGROUP).
    born_placed: bool = false,
};

pub fn spawnRaw(bytes: []const u8, out: *abi.SpawnOut, err: errtext.CBuf) c_int {
    return spawnInner(bytes, out, err) catch return @intCast(last_errno);
}

const Pipe = struct {
    r: i32 = -1,
    w: i32 = -1,
    fn open(self: *Pipe, err: errtext.CBuf, what: []const u8) !void {
        var fds: [2]i32 = undefined;
        if (errno(linux.pipe2(&fds, .{ .CLOEXEC = true }))) |e| return fail(err, e, "pipe for {s}", .{what});
        self.* = .{ .r = fds[0], .w = fds[1] };
    }
    fn close(self: *Pipe) void {
        if (self.r >= 0) _ = linux.close(self.r);
        if (self.w >= 0) _ = linux.close(self.w);
        self.* = .{};
    }
};

/// Cleared when the kernel (or a seccomp filter around us) has no clone3: clone(2) from then on.
var clone3_works = clone3.supported;

/// Clones the jail's child. A jail that only joins one cgroup made ahead of time on a cgroup v2
/// hierarchy is started in it by the kernel (clone3 with CLONE_INTO_CGROUP): the child then has
/// no cgroup to join. Anything else, or a kernel that refuses, gets clone(2) and the child joins
/// or makes its cgroups itself.
fn cloneJail(ctx: *ChildCtx, flags: u32, map: usize, ctid: *i32) usize {
    const spec = &ctx.spec;
    const into = if (clone3_works and spec.cgroups.len == 1 and spec.cgroups.slice()[0].kind == .join)
        openCgroup2(spec.cgroups.slice()[0].dir)
    else
        -1;
    if (into >= 0) {
        defer _ = linux.close(into);
        const joins = spec.cgroups;
        spec.cgroups = .{};
        ctx.born_placed = true;
        const args = clone3.Args{
            .flags = @as(u64, flags) | linux.CLONE.INTO_CGROUP,
            .child_tid = @intFromPtr(ctid),
            .exit_signal = linux.SIG.CHLD,
            .stack = map,
            .stack_size = region_size,
            .cgroup = @intCast(into),
        };
        const rc = clone3.clone3(&args, childEntry, @intFromPtr(ctx));
        const e = errno(rc) orelse return rc;
        // No child exists: it joins the cgroup itself after all.
        spec.cgroups = joins;
        ctx.born_placed = false;
        if (e == .NOSYS or e == .PERM or e == .@"2BIG" or e == .INVAL) clone3_works = false;
    }
    return linux.clone(childEntry, map + region_size, flags | linux.SIG.CHLD, @intFromPtr(ctx), null, 0, ctid);
}

/// An O_PATH descriptor of `dir` if it is a cgroup v2 directory, or -1.
fn openCgroup2(dir: [:0]const u8) i32 {
    const rc = linux.open(dir.ptr, .{ .PATH = true, .DIRECTORY = true, .CLOEXEC = true }, 0);
    if (errno(rc) != null) return -1;
    const fd: i32 = @intCast(rc);
    if (clone3.isCgroup2(fd)) return fd;
    _ = linux.close(fd);
    return -1;
}

fn spawnInner(bytes: []const u8, out: *abi.SpawnOut, err: errtext.CBuf) !c_int {
    const entered_ns = sys.monotonicNs();
    out.* = .{ .pid = -1, .status_fd = -1, .sync_fd = -1, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .reserved = .{ -1, -1 } };
    const kfd = try keeperFd(err);
    if (bytes.len > region_size / 4) return fail(err, .@"2BIG", "jail spec of {d} bytes is too large", .{bytes.len});

    const map = acquireRegion();
    if (errno(map)) |e| return fail(err, e, "map jail setup stack", .{});
    var mapped = true;
    defer if (mapped) {
        regions_lock.lock();
        defer regions_lock.unlock();
        releaseRegion(map);
    };
    const ctx: *ChildCtx = @ptrFromInt(map);
    const copy: [*]u8 = @ptrFromInt(map + std.mem.alignForward(usize, @sizeOf(ChildCtx), 16));
    @memcpy(copy[0..bytes.len], bytes);
    ctx.spec = .{};
    var failure: spec_mod.DecodeFailure = undefined;
    spec_mod.decode(copy[0..bytes.len], &ctx.spec, &failure) catch |e|
        return fail(err, .INVAL, "invalid jail spec (record {d}): {s}", .{ failure.tag, @errorName(e) });
    const spec = &ctx.spec;
    ctx.spawn_ns = entered_ns;

    var status = Pipe{};
    var sync = Pipe{};
    var stdio = [3]Pipe{ .{}, .{}, .{} };
    errdefer {
        status.close();
        sync.close();
        for (&stdio) |*p| p.close();
    }
    try status.open(err, "status");
    try sync.open(err, "sync");
    // Waiting in the pipe before the child exists: its keeper never waits for the go.
    if (spec.flags.go) {
        if (errno(linux.write(sync.w, &[_]u8{abi.sync_go}, 1))) |e| return fail(err, e, "write the go byte", .{});
    }
    for (spec.stdio, 0..) |s, i| {
        if (s == spec_mod.stdio_pipe) try stdio[i].open(err, "stdio");
    }
    // The child gets copies of these with its descriptor table; ours go whatever happens
    // (closed through a copy of the set: the region is the child's once it runs).
    var trees: idmap.Trees = undefined;
    if (spec.flags.userns) trees = .{};
    defer if (spec.flags.userns) trees.close();
    if (spec.flags.userns) {
        idmap.make(spec, &trees, err) catch {
            last_errno = idmap.last_errno;
            return error.Failed;
        };
        ctx.trees = trees;
    }

    ctx.fds = .{
        .status = status.w,
        .sync = sync.r,
        .sync_owner = sync.w,
        .stdio = .{ stdio[0].r, stdio[1].w, stdio[2].w },
        .keeper = kfd,
        .owner = ownerPidfd(),
        .ns = .{},
    };

    regions_lock.lock();
    defer regions_lock.unlock();
    sweepRegions();
    // Pooled namespaces belong to the host's user namespace, which a user-namespaced jail
    // cannot enter: it makes its own.
    var ns: ns_pool.Set = .{};
    const pooling = !spec.flags.net_host and !spec.flags.userns and ns_pool_enabled;
    if (pooling) ns = ns_pool.take(spec, copy[0..bytes.len]);
    // The jail first: the makers' clones would take the free CPU it wants.
    defer if (pooling) ns_pool.refill(mounts.buildPooledRoot);
    ctx.fds.ns = ns;
    ctx.userns_go = 0;
    // The child gets its own copy of the descriptor table: ours go whatever happens (closed
    // through a copy of the set: the region is the child's now).
    defer ns.close();
    const region = claimRegion(map) orelse return fail(err, .AGAIN, "too many jails starting at once", .{});

    ctx.clone_ns = if (spec.flags.trace) sys.monotonicNs() else 0;
    // No handler of Bun's may run on the child's stack before the child resets them all.
    const all = linux.sigfillset();
    var old: linux.sigset_t = undefined;
    _ = linux.sigprocmask(linux.SIG.SETMASK, &all, &old);
    var flags: u32 = linux.CLONE.VM | linux.CLONE.NEWPID | linux.CLONE.CHILD_CLEARTID;
    // With the user namespace made in the same clone, it owns the new pid namespace.
    if (spec.flags.userns) flags |= linux.CLONE.NEWUSER;
    const rc = cloneJail(ctx, flags, map, &region.ctid);
    _ = linux.sigprocmask(linux.SIG.SETMASK, &old, null);
    if (errno(rc)) |e| {
        region.addr = 0;
        return fail(err, e, "clone jail", .{});
    }
    mapped = false; // the child owns the region until it executes the keeper
    if (spec.flags.userns) try releaseUserns(ctx, @intCast(rc), err);

    // Parent: keep our ends, close the child's.
    _ = linux.close(status.w);
    _ = linux.close(sync.r);
    out.pid = @intCast(rc);
    out.status_fd = status.r;
    if (spec.flags.go) _ = linux.close(sync.w) else out.sync_fd = sync.w;
    if (stdio[0].r >= 0) {
        _ = linux.close(stdio[0].r);
        out.stdin_fd = stdio[0].w;
    }
    if (stdio[1].w >= 0) {
        _ = linux.close(stdio[1].w);
        out.stdout_fd = stdio[1].r;
    }
    if (stdio[2].w >= 0) {
        _ = linux.close(stdio[2].w);
        out.stderr_fd = stdio[2].r;
    }
    return 0;
}

/// For a user-namespaced jail: write its id maps (its child cannot), then let it go. On
/// failure the child is killed and reaped here.
fn releaseUserns(ctx: *ChildCtx, pid: i32, err: errtext.CBuf) !void {
    const s = &ctx.spec;
    var ok = true;
    var what: []const u8 = "";
    var e: linux.E = .SUCCESS;
    var pb: [64]u8 = undefined;
    var line: [64]u8 = undefined;
    // setgroups stays allowed: the child must drop the supplementary groups it inherited from
    // the owner (host groups would otherwise open group-readable host files to it).
    const files = [_]struct { name: []const u8, base: u32 }{
        .{ .name = "uid_map", .base = s.host_uid_base },
        .{ .name = "gid_map", .base = s.host_gid_base },
    };
    for (files) |f| {
        const path = std.fmt.bufPrintZ(&pb, "/proc/{d}/{s}", .{ pid, f.name }) catch unreachable;
        const text = std.fmt.bufPrint(&line, "0 {d} {d}\n", .{ f.base, s.id_count }) catch unreachable;
        const fd = linux.open(path.ptr, .{ .ACCMODE = .WRONLY, .CLOEXEC = true }, 0);
        if (errno(fd)) |fe| {
            ok = false;
            e = fe;
            what = f.name;
            break;
        }
        const w = linux.write(@intCast(fd), text.ptr, text.len);
        _ = linux.close(@intCast(fd));
        if (errno(w)) |we| {
            ok = false;
            e = we;
            what = f.name;
            break;
        }
    }
    @atomicStore(u32, &ctx.userns_go, if (ok) 1 else 2, .release);
    _ = linux.futex(&ctx.userns_go, .{ .cmd = .WAKE, .private = true }, 1, .{ .timeout = null }, null, 0);
    if (ok) return;
    _ = linux.kill(pid, linux.SIG.KILL);
    var st: u32 = 0;
    _ = linux.wait4(pid, &st, W_ALL, null);
    return fail(err, e, "write /proc/{d}/{s} for the user namespace", .{ pid, what });
}

pub fn reap(pid: i32, nohang: bool, status: *i32, err: errtext.CBuf) c_int {
    if (regions_lock.tryLock()) {
        defer regions_lock.unlock();
        sweepRegions();
    }
    var st: u32 = 0;
    const flags: u32 = W_ALL | (if (nohang) @as(u32, linux.W.NOHANG) else 0);
    while (true) {
        const rc = linux.wait4(pid, &st, flags, null);
        if (errno(rc)) |e| {
            if (e == .INTR) continue;
            return err.set(errnoCode(e), "wait for jail {d}", .{pid});
        }
        if (rc == 0) return errnoCode(.AGAIN);
        status.* = @bitCast(st);
        return 0;
    }
}

/// Nothing of a Linux jail outlives its namespaces on the kernel side: its processes die with
/// its pid namespace and its mounts with its mount namespace. (Host-side leftovers, cgroups and
/// network devices, are collected by TypeScript.)
pub fn cleanup(name: [*:0]const u8, err: errtext.CBuf) c_int {
    _ = name;
    _ = err;
    return 0;
}

pub fn unmount(path: [*:0]const u8, err: errtext.CBuf) c_int {
    if (errno(linux.umount2(path, linux.MNT.DETACH))) |e| return err.set(errnoCode(e), "unmount {s}", .{path});
    return 0;
}

// ---------------------------------------------------------------------------------------
// Child side. Everything below runs in the cloned child: raw syscalls only.

const ChildFds = struct {
    status: i32,
    sync: i32,
    sync_owner: i32,
    stdio: [3]i32,
    keeper: i32,
    /// A pidfd of the owner, or -1 (see ownerPidfd).
    owner: i32,
    /// Fresh namespaces from the pool (loopback up; maybe the root built), or -1 each.
    ns: ns_pool.Set,
};

fn childEntry(arg: usize) callconv(.c) u8 {
    const ctx: *ChildCtx = @ptrFromInt(arg);
    // Until it executes the keeper this process holds the owner's memory: it must never dump
    // core. The soft limit stays 0 for the jail (its rlimits may raise it): a core dump is
    // handed to the host's core_pattern, which may be a program running outside any jail.
    sys.noCoreDumps();
    if (ctx.spec.flags.userns) {
        // Nothing works in a user namespace without id maps: wait for the owner to write them.
        while (@atomicLoad(u32, &ctx.userns_go, .acquire) == 0) {
            _ = linux.futex(&ctx.userns_go, .{ .cmd = .WAIT, .private = true }, 0, .{ .timeout = null }, null, 0);
        }
        if (@atomicLoad(u32, &ctx.userns_go, .acquire) != 1) linux.exit_group(127);
        // Become the namespace's root for real (the maps do not change our credentials), with
        // none of the owner's supplementary groups.
        if (linux.E.init(linux.setgroups(0, &[_]u32{})) != .SUCCESS or
            linux.E.init(linux.setresgid(0, 0, 0)) != .SUCCESS or
            linux.E.init(linux.setresuid(0, 0, 0)) != .SUCCESS) linux.exit_group(127);
    }
    // Bun's handlers live in memory we share: restore defaults before letting signals in.
    const dfl = linux.Sigaction{ .handler = .{ .handler = linux.SIG.DFL }, .mask = linux.sigemptyset(), .flags = 0 };
    var sig: u8 = 1;
    while (sig < linux.NSIG) : (sig += 1) {
        if (sig != linux.SIG.KILL and sig != linux.SIG.STOP) _ = linux.sigaction(sig, &dfl, null);
    }
    const none = linux.sigemptyset();
    _ = linux.sigprocmask(linux.SIG.SETMASK, &none, null);
    child(ctx);
}

fn child(ctx: *ChildCtx) noreturn {
    const spec = &ctx.spec;
    const fds = ctx.fds;
    const trees = if (spec.flags.userns) &ctx.trees else null;
    var trace = sys.Trace{ .on = spec.flags.trace };
    trace.markAt("spawn call", ctx.spawn_ns);
    trace.markAt("shim: spec, pipes, clone", ctx.clone_ns);
    var c = Child{ .spec = spec, .status_fd = fds.status, .trace = &trace, .trees = trees };
    c.mark(if (ctx.born_placed) "child started in its cgroup" else "child started");
    // Die with the owner, even if it is SIGKILLed. An owner that died before this line sends
    // no signal: its pidfd says so (and without pidfds, the keeper's read of the sync pipe
    // catches an owner that died before writing the go byte).
    _ = linux.prctl(@intFromEnum(linux.PR.SET_PDEATHSIG), linux.SIG.KILL, 0, 0, 0);
    if (sys.pidfdEnded(fds.owner)) linux.exit_group(127);

    // The child starts with a copy of every descriptor the owner has: other jails' pipes among
    // them. Holding those (a pre-made jail may wait a long time) would keep other jails from
    // seeing EOF on their stdin, so everything this jail does not use goes now. That includes
    // our copy of the sync pipe's write end, which would hide the owner's death, and the
    // owner's pidfd, looked at already.
    closeInherited(spec, fds, trees);

    // Cgroups made ahead of time are only joined, at once: a placer would cost more than that.
    var placer = cgroups.Placer{ .spec = spec };
    const placing = spec.cgroups.len > 0 and !cgroups.onlyJoins(spec);
    if (placing) cgroups.startPlacer(&c, &placer) else if (spec.cgroups.len > 0) {
        var f = cgroups.CgFailure{};
        if (!cgroups.setupCgroups(spec, "0", &f)) c.die(f.e, "{s} {s}", .{ f.what, f.path() });
    }

    // The cgroup namespace comes later, in the keeper: the placer (or, for a user-namespaced
    // jail, the owner) moves this process into the jail's cgroups meanwhile, and the namespace
    // must be rooted there.
    var ns: usize = linux.CLONE.NEWNS | linux.CLONE.NEWUTS | linux.CLONE.NEWIPC;
    if (!spec.flags.net_host) ns |= linux.CLONE.NEWNET;
    const pooled = [_]struct { fd: i32, kind: usize, what: []const u8 }{
        .{ .fd = fds.ns.mnt, .kind = linux.CLONE.NEWNS, .what = "mount" },
        .{ .fd = fds.ns.net, .kind = linux.CLONE.NEWNET, .what = "network" },
        .{ .fd = fds.ns.ipc, .kind = linux.CLONE.NEWIPC, .what = "IPC" },
        .{ .fd = fds.ns.uts, .kind = linux.CLONE.NEWUTS, .what = "UTS" },
    };
    // A private address: the host's side is reached through what is opened here, before the
    // namespaces change (netwire.zig).
    var host_net = netwire.Host{};
    if (spec.net_wire != null) if (host_net.open()) |f| c.die(f.e, "network: {s}", .{f.step});
    for (pooled) |p| if (p.fd >= 0) {
        c.check(linux.syscall2(.setns, @bitCast(@as(isize, p.fd)), p.kind), "enter pooled {s} namespace", .{p.what});
        _ = linux.close(p.fd);
        ns &= ~p.kind;
    };
    // A pooled mount namespace is private already, with the root built in it.
    const root_built = fds.ns.mnt >= 0;
    if (ns != 0) c.check(linux.unshare(ns), "unshare namespaces", .{});
    if (!root_built) c.check(linux.mount(null, "/", null, linux.MS.REC | linux.MS.PRIVATE, 0), "make / private", .{});
    c.mark("namespaces");
    if (spec.net_wire) |raw| {
        const w = netwire.Wire.decode(raw) catch unreachable;
        if (netwire.wireJail(&w, &host_net, std.mem.sliceTo(&fds.ns.veth, 0), fds.ns.veth_index, c.trace)) |f| c.die(f.e, "network {s}: {s}", .{ w.vethName(), f.step });
        host_net.close();
        c.mark("network: jail end");
    }

    // setns put us at a pooled namespace's root; otherwise the root is built here.
    var root_path = Path{};
    const root = if (root_built) "/" else mounts.assembleRoot(&c, &root_path);
    const rootfd = mounts.openRoot(&c, root);
    c.mark(if (root_built) "root from the namespace pool" else "overlay root");

    mounts.mountProc(&c, rootfd);
    c.mark("/proc");
    if (!root_built) mounts.fillRoot(&c, rootfd);
    _ = linux.close(rootfd);

    if (spec.hostname) |h| c.check(linux.syscall2(.sethostname, @intFromPtr(h.ptr), h.len), "sethostname {s}", .{h});
    if (!spec.flags.net_host and fds.ns.net < 0) {
        if (sys.loopbackUp()) |f| c.die(f.e, "{s}", .{f.step});
    }
    c.mark("mounts, hostname");

    if (root_built) c.check(linux.chdir("/"), "chdir /", .{}) else {
        mounts.enterRoot(&c, root);
        c.mark("pivot_root");
    }
    if (spec.root_dir != null and spec.flags.root_readonly)
        c.check(linux.mount(null, "/", null, linux.MS.REMOUNT | linux.MS.BIND | linux.MS.RDONLY, 0), "remount / read-only", .{});

    // Descriptors first: placing them duplicates each above 63, which a low RLIMIT_NOFILE
    // would refuse (descriptors above a limit stay open; only new ones must fit under it).
    placeFds(&c, fds);
    for (spec.rlimits.slice()) |r| c.check(setRlimit(r), "setrlimit {d}", .{r.resource});

    c.mark("descriptors, rlimits");
    if (placing) cgroups.awaitPlacer(&c, &placer);
    c.mark("cgroups placed");

    // The keeper waits for the owner's go (the owner places a user-namespaced jail and wires
    // its network meanwhile; a pre-made jail waits for its payload) on the sync pipe, which
    // placeFds put after the passed descriptors.
    if (trace.on) trace.flush(c.status_fd, "");
    execKeeper(&c, fds.keeper);
}

/// A hard limit above the one the jail inherited needs CAP_SYS_RESOURCE in the host's user
/// namespace, which a user-namespaced jail lacks: it gets the most it may have instead.
fn setRlimit(r: spec_mod.Rlimit) usize {
    var lim = [2]u64{ r.soft, r.hard };
    const rc = linux.syscall4(.prlimit64, 0, r.resource, @intFromPtr(&lim), 0);
    if (errno(rc) != .PERM) return rc;
    var cur: [2]u64 = undefined;
    if (errno(linux.syscall4(.prlimit64, 0, r.resource, 0, @intFromPtr(&cur))) != null) return rc;
    lim = .{ @min(r.soft, cur[1]), @min(r.hard, cur[1]) };
    return linux.syscall4(.prlimit64, 0, r.resource, @intFromPtr(&lim), 0);
}

/// stdio to 0-2, status to 3, passed descriptors to 4.., then the sync pipe (the keeper's): first
/// lift every source above the targets (a source may sit on another's target), then place them.
fn placeFds(c: *Child, fds: ChildFds) void {
    const s = c.spec;
    const n = 5 + s.pass_fds.len;
    var src: [5 + spec_mod.max_pass_fds]i32 = undefined;
    for (0..3) |i| {
        src[i] = if (fds.stdio[i] >= 0) fds.stdio[i] else switch (s.stdio[i]) {
            spec_mod.stdio_null => blk: {
                const rc = linux.open("/dev/null", .{ .ACCMODE = .RDWR, .CLOEXEC = true }, 0);
                c.check(rc, "open /dev/null", .{});
                break :blk @intCast(rc);
            },
            else => s.stdio[i],
        };
    }
    src[3] = fds.status;
    for (s.pass_fds.slice(), 0..) |fd, i| src[4 + i] = fd;
    src[4 + s.pass_fds.len] = fds.sync;
    var high: [5 + spec_mod.max_pass_fds]i32 = undefined;
    for (0..n) |i| {
        const rc = linux.fcntl(src[i], F_DUPFD_CLOEXEC, 64);
        c.check(rc, "duplicate descriptor {d}", .{src[i]});
        high[i] = @intCast(rc);
    }
    c.status_fd = high[3];
    for (0..n) |i| c.check(linux.dup2(high[i], @intCast(i)), "place descriptor {d}", .{i});
    c.status_fd = 3;
    // Everything else closes when the keeper is executed (the keeper memfd must survive
    // until then, so close-on-exec rather than close).
    const CLOSE_RANGE_CLOEXEC = 1 << 2;
    _ = linux.syscall3(.close_range, n, std.math.maxInt(u32), CLOSE_RANGE_CLOEXEC);
}

fn closeInherited(spec: *const Spec, fds: ChildFds, trees: ?*const idmap.Trees) void {
    var keep: [10 + spec_mod.max_pass_fds + spec_mod.max_lowers + spec_mod.max_mounts]i32 = undefined;
    var n: usize = 0;
    for ([_]i32{ fds.status, fds.sync, fds.keeper, fds.ns.net, fds.ns.ipc, fds.ns.uts, fds.ns.mnt }) |fd| {
        keep[n] = fd;
        n += 1;
    }
    for (0..3) |i| {
        keep[n] = if (fds.stdio[i] >= 0) fds.stdio[i] else spec.stdio[i];
        n += 1;
    }
    for (spec.pass_fds.slice()) |fd| {
        keep[n] = fd;
        n += 1;
    }
    if (trees) |t| for (t.lowers ++ t.mounts) |fd| if (fd >= 0) {
        keep[n] = fd;
        n += 1;
    };
    std.mem.sort(i32, keep[0..n], {}, std.sort.asc(i32));
    var low: u32 = 0;
    for (keep[0..n]) |fd| {
        if (fd < 0) continue;
        const k: u32 = @intCast(fd);
        if (k > low) _ = linux.syscall3(.close_range, low, k - 1, 0);
        if (k + 1 > low) low = k + 1;
    }
    _ = linux.syscall3(.close_range, low, std.math.maxInt(u32), 0);
}

fn execKeeper(c: *const Child, kfd: i32) noreturn {
    const s = c.spec;
    var nb: [5][24]u8 = undefined;
    const uid = std.fmt.bufPrintZ(&nb[0], "{d}", .{s.uid}) catch unreachable;
    const gid = std.fmt.bufPrintZ(&nb[1], "{d}", .{s.gid}) catch unreachable;
    const caps = std.fmt.bufPrintZ(&nb[2], "{x}", .{s.caps}) catch unreachable;
    const flags = std.fmt.bufPrintZ(&nb[3], "{d}", .{@as(u32, @bitCast(s.flags))}) catch unreachable;
    const npass = std.fmt.bufPrintZ(&nb[4], "{d}", .{s.pass_fds.len}) catch unreachable;
    var argv: [spec_mod.max_argv + 9:null]?[*:0]const u8 = undefined;
    const head = [_][*:0]const u8{ "lj-keeper", uid.ptr, gid.ptr, caps.ptr, flags.ptr, npass.ptr, s.cwd.ptr, "--" };
    for (head, 0..) |h, i| argv[i] = h;
    for (s.argv.slice(), 0..) |a, i| argv[head.len + i] = a;
    argv[head.len + s.argv.len] = null;
    var envp: [spec_mod.max_env + 1:null]?[*:0]const u8 = undefined;
    for (s.env.slice(), 0..) |e, i| envp[i] = e;
    envp[s.env.len] = null;
    const rc = linux.syscall5(.execveat, @bitCast(@as(isize, kfd)), @intFromPtr(""), @intFromPtr(&argv), @intFromPtr(&envp), linux.AT.EMPTY_PATH);
    c.die(linux.E.init(rc), "execute keeper", .{});
}
