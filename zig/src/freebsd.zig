//! The FreeBSD backend: a jail made with jail_set(2) around a root assembled with nmount(2)
//! (nullfs world, unionfs layers, a writable upper, devfs with lightjail's ruleset, tmpfs /tmp),
//! limited with RCTL and, when addresses are given, reachable through interface aliases.
//!
//! Process layout. lj_spawn forks a supervisor (the pid the owner sees). The supervisor stays
//! outside the jail: it dies with the owner (PROC_PDEATHSIG_CTL; its handler removes the jail),
//! reaps orphans (PROC_REAP_ACQUIRE), runs the setup steps, forks the payload, waits for it,
//! removes the jail (killing whatever is left), undoes every step in reverse and only then
//! reports "X code" / "S signal" on the status pipe. SIGINFO is the owner's destroy request
//! (what TypeScript sends for kill() and timeouts): the jail goes, the same teardown follows,
//! and the end is "S 9". The payload child closes every descriptor it must not keep
//! (jail_attach refuses a process with an open directory), attaches, applies rlimits, waits
//! for the owner's start message ('g', or 'p' and a pooled jail's payload), drops to the
//! requested uid/gid and executes.
//!
//! The order of the steps lives in freebsd_steps.zig, the encodings in freebsd_params.zig; both
//! are unit-tested on Linux. This file is the thin system-call layer (`Real`) plus the fork and
//! exec code. It is cross-compiled for x86_64- and aarch64-freebsd.14.0 and has NOT been run on
//! FreeBSD (see docs/freebsd.md).
const std = @import("std");
const c = std.c;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const params = @import("freebsd_params.zig");
const plan_mod = @import("freebsd_steps.zig");
const start_mod = @import("freebsd_start.zig");

const Spec = spec_mod.Spec;
const E = params.E;
const errnoCode = params.errnoCode;

// ---------------------------------------------------------------------------------------
// libc entry points std.c does not declare (or declares with a narrower type).

extern "c" fn jail_set(iov: [*]params.Iovec, niov: c_uint, flags: c_int) c_int;
extern "c" fn jail_attach(jid: c_int) c_int;
extern "c" fn jail_remove(jid: c_int) c_int;
extern "c" fn jail_get(iov: [*]params.Iovec, niov: c_uint, flags: c_int) c_int;
const sys_nmount = @extern(*const fn ([*]params.Iovec, c_uint, c_int) callconv(.c) c_int, .{ .name = "nmount" });
extern "c" fn rctl_add_rule(inbuf: [*]const u8, inlen: usize, outbuf: ?[*]u8, outlen: usize) c_int;
extern "c" fn rctl_remove_rule(inbuf: [*]const u8, inlen: usize, outbuf: ?[*]u8, outlen: usize) c_int;
extern "c" fn procctl(idtype: c_int, id: i64, cmd: c_int, data: ?*anyopaque) c_int;
extern "c" fn closefrom(lowfd: c_int) void;
extern "c" fn setgroups(ngroups: c_int, gidset: [*]const u32) c_int;
const Ifaddrs = extern struct {
    next: ?*Ifaddrs,
    name: [*:0]u8,
    flags: c_uint,
    addr: ?[*]const u8,
    netmask: ?*anyopaque,
    dstaddr: ?*anyopaque,
    data: ?*anyopaque,
};
extern "c" fn getifaddrs(out: *?*Ifaddrs) c_int;
extern "c" fn freeifaddrs(ifa: ?*Ifaddrs) void;
const sys_unmount = @extern(*const fn ([*:0]const u8, c_int) callconv(.c) c_int, .{ .name = "unmount" });
// ioctl(2) takes an unsigned long request; every request used here passes a pointer.
const sys_ioctl = @extern(*const fn (c_int, c_ulong, ?*anyopaque) callconv(.c) c_int, .{ .name = "ioctl" });
const Rlimit = extern struct { cur: i64, max: i64 };
const sys_setrlimit = @extern(*const fn (c_int, *const Rlimit) callconv(.c) c_int, .{ .name = "setrlimit" });

const F_SETFD: c_int = 2;
const F_DUPFD_CLOEXEC: c_int = 17;
const FD_CLOEXEC: c_int = 1;
const WNOHANG: c_int = 1;
const SOCK_DGRAM: c_uint = 2;
const SOCK_CLOEXEC: c_uint = 0x10000000;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const AT_SYMLINK_NOFOLLOW: u32 = 0x200;
const SIG = struct {
    const HUP = 1;
    const INT = 2;
    const QUIT = 3;
    const KILL = 9;
    const PIPE = 13;
    const TERM = 15;
    const CONT = 19;
    const WINCH = 28;
    /// Not forwarded: the owner's destroy request (TypeScript's kill() with SIGKILL and its
    /// timeouts send it instead of killing the supervisor, whose teardown must run).
    const INFO = 29;
    const USR1 = 30;
    const USR2 = 31;
};
/// FreeBSD's _SIG_MAXSIG + 1: every signal number is below it.
const max_signal = 129;
/// Signals the supervisor passes on to the payload (as the Linux keeper does).
const forwarded = [_]c_int{ SIG.INT, SIG.HUP, SIG.QUIT, SIG.TERM, SIG.USR1, SIG.USR2, SIG.WINCH, SIG.CONT };

comptime {
    std.debug.assert(@sizeOf(c.Stat) == 224);
    std.debug.assert(@sizeOf(params.Iovec) == 16);
}

fn errno() u16 {
    return @intCast(c._errno().*);
}

fn rcErr(rc: c_int) u16 {
    return if (rc == -1) errno() else 0;
}

// ---------------------------------------------------------------------------------------
// Owner side (runs on a Bun thread: only pipes and one fork).

pub fn spawn(spec: *const Spec, out: *abi.SpawnOut, err: errtext.CBuf) c_int {
    out.* = .{ .pid = -1, .status_fd = -1, .sync_fd = -1, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .reserved = .{ -1, -1 } };
    // Cheap checks before anything exists; the rest fails on the status pipe with its step.
    const name = spec.jail_name orelse spec.hostname orelse
        return err.set(errnoCode(.INVAL), "a FreeBSD jail needs a name (jail_name or hostname)", .{});
    if (params.checkJailName(name)) |why| return err.set(errnoCode(.INVAL), "jail name \"{s}\" {s}", .{ name, why });
    for (spec.rlimits.slice()) |r| {
        if (params.rlimitResource(r.resource) == null)
            return err.set(errnoCode(.INVAL), "rlimit resource {d} has no FreeBSD equivalent", .{r.resource});
    }

    var status = Pipe{};
    var sync = Pipe{};
    var stdio = [3]Pipe{ .{}, .{}, .{} };
    var ok = false;
    defer if (!ok) {
        status.close();
        sync.close();
        for (&stdio) |*p| p.close();
    };
    if (status.open()) |e| return err.set(e, "pipe for status", .{});
    if (sync.open()) |e| return err.set(e, "pipe for sync", .{});
    for (spec.stdio, 0..) |s, i| {
        if (s == spec_mod.stdio_pipe) if (stdio[i].open()) |e| return err.set(e, "pipe for stdio", .{});
    }

    const owner = c.getpid();
    // A destroy request (SIGINFO, ignored by default) sent before the supervisor has its
    // handler must not be lost: it is born with SIGINFO blocked, so the signal waits.
    var block: c.sigset_t = undefined;
    _ = c.sigemptyset(&block);
    _ = c.sigaddset(&block, SIG.INFO);
    var old: c.sigset_t = undefined;
    _ = c.pthread_sigmask(c.SIG.BLOCK, &block, &old);
    // libthr's fork: the child is a consistent single-threaded copy (locks reinitialised),
    // which matters because the supervisor runs real code, not just an exec.
    const pid = c.fork();
    if (pid != 0) _ = c.pthread_sigmask(c.SIG.SETMASK, &old, &block);
    if (pid < 0) return err.set(errno(), "fork jail supervisor for {s}", .{name});
    if (pid == 0) {
        _ = c.close(sync.w); // our copy would hide the owner's death from the sync read
        supervisor(spec, .{
            .status = status.w,
            .sync = sync.r,
            .stdio = .{ stdio[0].r, stdio[1].w, stdio[2].w },
            .owner = owner,
        });
    }

    ok = true;
    _ = c.close(status.w);
    _ = c.close(sync.r);
    out.pid = pid;
    out.status_fd = status.r;
    if (spec.flags.go) {
        // The owner has nothing to do before the payload: the go byte now, and no write end.
        _ = c.write(sync.w, &[_]u8{abi.sync_go}, 1);
        _ = c.close(sync.w);
    } else out.sync_fd = sync.w;
    if (stdio[0].r >= 0) {
        _ = c.close(stdio[0].r);
        out.stdin_fd = stdio[0].w;
    }
    if (stdio[1].w >= 0) {
        _ = c.close(stdio[1].w);
        out.stdout_fd = stdio[1].r;
    }
    if (stdio[2].w >= 0) {
        _ = c.close(stdio[2].w);
        out.stderr_fd = stdio[2].r;
    }
    return 0;
}

const Pipe = struct {
    r: c_int = -1,
    w: c_int = -1,
    fn open(self: *Pipe) ?u16 {
        var fds: [2]c_int = undefined;
        if (c.pipe2(&fds, .{ .CLOEXEC = true }) != 0) return errno();
        self.* = .{ .r = fds[0], .w = fds[1] };
        return null;
    }
    fn close(self: *Pipe) void {
        if (self.r >= 0) _ = c.close(self.r);
        if (self.w >= 0) _ = c.close(self.w);
        self.* = .{};
    }
};

pub fn reap(pid: i32, nohang: bool, status: *i32, err: errtext.CBuf) c_int {
    while (true) {
        var st: c_int = 0;
        const rc = c.wait4(pid, &st, if (nohang) WNOHANG else 0, null);
        if (rc < 0) {
            const e = errno();
            if (e == errnoCode(.INTR)) continue;
            return err.set(e, "wait for jail supervisor {d}", .{pid});
        }
        if (rc == 0) return errnoCode(.AGAIN);
        status.* = st;
        return 0;
    }
}

/// Garbage collection of a leftover mount. A stage root holds a stack of mounts on one path
/// (nullfs world, unionfs layers), so this unmounts until the path is no mount point; busy
/// mounts are forced (their owner is gone).
/// Removes what a jail of a dead owner left behind: the jail itself (jail_remove kills what
/// still runs in it) and its RCTL rules. FreeBSD 14 keeps both when the supervisor is
/// SIGKILLed; FreeBSD 15's owning descriptors make this a no-op there.
pub fn cleanup(name: [*:0]const u8, err: errtext.CBuf) c_int {
    const n = std.mem.span(name);
    const jid = jailByName(n);
    if (jid >= 0) {
        if (jail_remove(jid) != 0) return err.set(errno(), "remove jail {s}", .{n});
    } else if (errno() != errnoCode(.NOENT)) {
        return err.set(errno(), "find jail {s}", .{n});
    }
    var fb: [300]u8 = undefined;
    const filter = std.fmt.bufPrintZ(&fb, "jail:{s}", .{n}) catch return err.set(errnoCode(.NAMETOOLONG), "jail name {s}", .{n});
    if (rctl_remove_rule(filter.ptr, filter.len + 1, null, 0) != 0) {
        const e = errno();
        // No such rules, or RACCT off (then there never were any).
        if (e != errnoCode(.SRCH) and e != errnoCode(.NOSYS)) return err.set(e, "remove RCTL rules {s}", .{filter});
    }
    return 0;
}

/// The jid of the jail with this name, or -1 with errno set (ENOENT: there is none).
fn jailByName(name: [:0]const u8) c_int {
    var l = params.IovList(2){};
    l.str("name", name);
    var msg: [256]u8 = undefined;
    l.errmsg(&msg);
    const iov = l.slice();
    return jail_get(iov.ptr, @intCast(iov.len), 0);
}

/// A process's start time in microseconds since boot (its identity across pid reuse), from
/// kern.proc.pid.<pid> and kern.boottime: what /proc/PID/stat's starttime is on Linux.
pub fn procStart(pid: i32, out: *u64, err: errtext.CBuf) c_int {
    var kp: [params.kinfo_proc_size]u8 align(8) = undefined;
    var len: usize = kp.len;
    const mib = [_]c_int{ params.CTL_KERN, params.KERN_PROC, params.KERN_PROC_PID, pid };
    if (c.sysctl(&mib, mib.len, &kp, &len, null, 0) != 0) return err.set(errno(), "sysctl kern.proc.pid.{d}", .{pid});
    // No such process: the kernel answers with an empty record.
    if (len == 0) return err.set(errnoCode(.SRCH), "process {d}", .{pid});
    var boot: [2]i64 = undefined;
    var blen: usize = @sizeOf(@TypeOf(boot));
    const bmib = [_]c_int{ params.CTL_KERN, params.KERN_BOOTTIME };
    if (c.sysctl(&bmib, bmib.len, &boot, &blen, null, 0) != 0) return err.set(errno(), "sysctl kern.boottime", .{});
    out.* = params.procStartMicros(kp[0..len], pid, boot) orelse
        return err.set(errnoCode(.PROTO), "kern.proc.pid.{d}: unexpected kinfo_proc ({d} bytes)", .{ pid, len });
    return 0;
}

pub fn unmount(path: [*:0]const u8, err: errtext.CBuf) c_int {
    var n: usize = 0;
    while (n < plan_mod.max_steps) : (n += 1) {
        var rc = sys_unmount(path, 0);
        if (rc != 0 and errno() == errnoCode(.BUSY)) rc = sys_unmount(path, params.MNT_FORCE);
        if (rc != 0) {
            const e = errno();
            if (n > 0 and (e == errnoCode(.INVAL) or e == errnoCode(.NOENT))) return 0;
            return err.set(e, "unmount {s}", .{path});
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// The supervisor (forked child of the owner; single-threaded from here on).

const Ends = struct { status: c_int, sync: c_int, stdio: [3]c_int, owner: c.pid_t };

/// Written by the signal handler, read by the supervisor.
var g_owner: c.pid_t = 0;
var g_payload = std.atomic.Value(c.pid_t).init(0);
var g_jid = std.atomic.Value(c_int).init(-1);
var g_removed = std.atomic.Value(bool).init(false);
/// The owner asked for the jail's end (SIGINFO), or died.
var g_destroy = std.atomic.Value(bool).init(false);

// The supervisor's working memory: globals, so a forked child never needs a large stack.
// Only forked supervisors touch them; each has its own copy.
var g_plan: plan_mod.Plan = undefined;
var g_mounts: [spec_mod.max_mounts]plan_mod.Mount = undefined;

fn onSignal(sig: c_int) callconv(.c) void {
    const saved = c._errno().*;
    defer c._errno().* = saved;
    // The owner's destroy request, or its death (PROC_PDEATHSIG_CTL delivers SIGTERM): the
    // jail goes at once, killing the payload ends the wait, and the normal teardown follows;
    // setup stops at its next step. Any other signal is passed on.
    if (sig == SIG.INFO or (sig == SIG.TERM and c.getppid() != g_owner)) {
        destroy();
        return;
    }
    const pid = g_payload.load(.acquire);
    if (pid > 0) _ = c.kill(pid, sig);
}

/// Async-signal-safe: flags the request first, so a jail created after the check below is
/// still seen by the setup loop (plan_mod's Supervisor checks `destroyed` at every step).
fn destroy() void {
    g_destroy.store(true, .release);
    const pid = g_payload.load(.acquire);
    if (pid > 0) _ = c.kill(pid, SIG.KILL);
    const jid = g_jid.load(.acquire);
    if (jid >= 0 and !g_removed.swap(true, .acq_rel)) _ = jail_remove(jid);
}

fn dieEarly(status_fd: c_int, e: u16, comptime fmt: []const u8, args: anytype) noreturn {
    var text: [600]u8 = undefined;
    var line: [720]u8 = undefined;
    const t = errtext.format(&text, e, fmt, args);
    writeAll(status_fd, params.errorLine(&line, e, t));
    c._exit(127);
}

fn writeAll(fd: c_int, bytes: []const u8) void {
    var off: usize = 0;
    while (off < bytes.len) {
        const n = c.write(fd, bytes[off..].ptr, bytes.len - off);
        if (n < 0) {
            if (errno() == errnoCode(.INTR)) continue;
            return;
        }
        off += @intCast(n);
    }
}

fn supervisor(spec: *const Spec, ends: Ends) noreturn {
    g_owner = ends.owner;
    // Bun's handlers, ignored signals (an ignored SIGCHLD would break wait4) and the calling
    // thread's mask are inherited through fork: start from the defaults.
    var dfl = std.mem.zeroes(c.Sigaction);
    dfl.handler.handler = c.SIG.DFL;
    var s: c_int = 1;
    // Not SIGINFO: SIG_DFL (ignore) would discard a destroy request pending since the fork;
    // its handler is installed below, before anything is unblocked.
    while (s < max_signal) : (s += 1) {
        if (s != SIG.INFO) _ = c.sigaction(s, &dfl, null);
    }
    // A pipe whose reader died must not kill the supervisor before it cleans up.
    var ign = std.mem.zeroes(c.Sigaction);
    ign.handler.handler = c.SIG.IGN;
    _ = c.sigaction(SIG.PIPE, &ign, null);
    var act = std.mem.zeroes(c.Sigaction);
    act.handler.handler = onSignal;
    act.flags = c.SA.RESTART;
    for (forwarded) |f| _ = c.sigaction(f, &act, null);
    _ = c.sigaction(SIG.INFO, &act, null);
    var none: c.sigset_t = undefined;
    _ = c.sigemptyset(&none);
    _ = c.sigprocmask(c.SIG.SETMASK, &none, null);

    var sig: c_int = SIG.TERM;
    _ = procctl(params.P_PID, c.getpid(), params.PROC_PDEATHSIG_CTL, &sig);
    // The owner may have died before the line above took effect.
    if (c.getppid() != ends.owner) c._exit(127);

    // Descriptors: 0-2 the payload's stdio, 3.. its passed descriptors, then the status
    // and sync pipes (close-on-exec). Everything else inherited from the owner is closed.
    const layout = placeFds(spec, ends);
    if (procctl(params.P_PID, c.getpid(), params.PROC_REAP_ACQUIRE, null) != 0)
        dieEarly(layout.status, errno(), "become the reaper of jail {s}", .{spec.jail_name orelse spec.hostname.?});

    g_plan = .{};
    const input = plan_mod.Input.fromSpec(spec, &g_mounts);
    var f = plan_mod.Failure{};
    g_plan.build(&input, &f) catch dieEarly(layout.status, f.errno, "{s}", .{f.text()});

    var real = Real{ .spec = spec, .layout = layout };
    const code = plan_mod.Supervisor(Real).lifecycle(&real, &g_plan);
    c._exit(code);
}

const Layout = struct {
    /// Descriptors 0..n-1 go to the payload.
    n: c_int,
    status: c_int,
    sync: c_int,
};

fn placeFds(spec: *const Spec, ends: Ends) Layout {
    const npass: c_int = @intCast(spec.pass_fds.len);
    const n: c_int = 3 + npass;
    const total: usize = @intCast(n + 2);
    var src: [3 + spec_mod.max_pass_fds + 2]c_int = undefined;
    for (0..3) |i| {
        src[i] = if (ends.stdio[i] >= 0) ends.stdio[i] else switch (spec.stdio[i]) {
            spec_mod.stdio_null => blk: {
                const fd = c.open("/dev/null", .{ .ACCMODE = .RDWR, .CLOEXEC = true });
                if (fd < 0) dieEarly(ends.status, errno(), "open /dev/null", .{});
                break :blk fd;
            },
            else => spec.stdio[i],
        };
    }
    for (spec.pass_fds.slice(), 0..) |fd, i| src[3 + i] = fd;
    src[total - 2] = ends.status;
    src[total - 1] = ends.sync;

    // Lift every source above every target first (a source may sit on another's target).
    var high_base: c_int = n + 2;
    for (src[0..total]) |fd| high_base = @max(high_base, fd + 1);
    var high: [src.len]c_int = undefined;
    var status_now = ends.status;
    for (src[0..total], 0..) |fd, i| {
        const rc = c.fcntl(fd, F_DUPFD_CLOEXEC, high_base);
        if (rc < 0) dieEarly(status_now, errno(), "duplicate descriptor {d}", .{fd});
        high[i] = rc;
    }
    status_now = high[total - 2];
    for (0..total) |i| {
        const target: c_int = @intCast(i);
        if (c.dup2(high[i], target) < 0) dieEarly(status_now, errno(), "place descriptor {d}", .{target});
    }
    const status: c_int = n;
    const sync: c_int = n + 1;
    _ = c.fcntl(status, F_SETFD, FD_CLOEXEC);
    _ = c.fcntl(sync, F_SETFD, FD_CLOEXEC);
    closefrom(n + 2);
    return .{ .n = n, .status = status, .sync = sync };
}

// ---------------------------------------------------------------------------------------
// The system-call layer the plan runs against (see Supervisor in freebsd_steps.zig).

const Real = struct {
    spec: *const Spec,
    layout: Layout,
    exec_r: c_int = -1,
    payload_line: [720]u8 = undefined,

    pub fn destroyed(_: *Real) bool {
        return g_destroy.load(.acquire);
    }
    pub fn jailExists(_: *Real, name: [:0]const u8) u16 {
        return if (jailByName(name) >= 0) errnoCode(.EXIST) else if (errno() == errnoCode(.NOENT)) 0 else errno();
    }
    pub fn hasAddress(_: *Real, a: params.Alias) bool {
        var list: ?*Ifaddrs = null;
        // Unknown: assume absent, and SIOCAIFADDR decides.
        if (getifaddrs(&list) != 0) return false;
        defer freeifaddrs(list);
        var it = list;
        while (it) |ifa| : (it = ifa.next) {
            if (ifa.addr) |sa| if (params.sockaddrIs(sa, a)) return true;
        }
        return false;
    }
    pub fn known(name: [:0]const u8) bool {
        var buf: [128]u8 = undefined;
        const full = std.fmt.bufPrintZ(&buf, "security.jail.param.{s}", .{name}) catch return false;
        var len: usize = 0;
        return c.sysctlbyname(full.ptr, null, &len, null, 0) == 0;
    }
    pub fn rctlAdd(_: *Real, rule: [:0]const u8) u16 {
        return rcErr(rctl_add_rule(rule.ptr, rule.len + 1, null, 0));
    }
    pub fn rctlRemove(_: *Real, filter: [:0]const u8) u16 {
        return rcErr(rctl_remove_rule(filter.ptr, filter.len + 1, null, 0));
    }
    pub fn aliasAdd(_: *Real, iface: [:0]const u8, a: params.Alias) u16 {
        return switch (a) {
            .v4 => |v| blk: {
                var req = params.aliasAdd4(iface, v);
                break :blk ifIoctl(params.AF_INET, params.SIOCAIFADDR, &req);
            },
            .v6 => |v| blk: {
                var req = params.aliasAdd6(iface, v);
                break :blk ifIoctl(params.AF_INET6, params.SIOCAIFADDR_IN6, &req);
            },
        };
    }
    pub fn aliasDel(_: *Real, iface: [:0]const u8, a: params.Alias) u16 {
        return switch (a) {
            .v4 => |v| blk: {
                var req = params.aliasDel4(iface, v);
                break :blk ifIoctl(params.AF_INET, params.SIOCDIFADDR, &req);
            },
            .v6 => |v| blk: {
                var req = params.aliasDel6(iface, v);
                break :blk ifIoctl(params.AF_INET6, params.SIOCDIFADDR_IN6, &req);
            },
        };
    }
    pub fn mkdir(_: *Real, path: [:0]const u8) u16 {
        return rcErr(c.mkdir(path.ptr, 0o755));
    }
    pub fn ensure(_: *Real, root: [:0]const u8, rel: [:0]const u8, create: bool, like: ?[:0]const u8) u16 {
        return ensurePath(root, rel, create, like);
    }
    pub fn nmount(_: *Real, iov: []params.Iovec, flags: c_int) u16 {
        return rcErr(sys_nmount(iov.ptr, @intCast(iov.len), flags));
    }
    pub fn unmount(_: *Real, path: [:0]const u8, flags: c_int) u16 {
        return rcErr(sys_unmount(path.ptr, flags));
    }
    pub fn devfsRules(_: *Real, dev: [:0]const u8, rules: []const params.DevfsRule) u16 {
        const fd = c.open(dev.ptr, .{ .DIRECTORY = true, .CLOEXEC = true });
        if (fd < 0) return errno();
        defer _ = c.close(fd);
        for (rules) |r| {
            var rule = r;
            // A rule with this id exists already: installed by an earlier jail.
            if (sys_ioctl(fd, params.DEVFSIO_RADD, &rule) != 0 and errno() != errnoCode(.EXIST)) return errno();
        }
        var rs: u16 = params.devfs_ruleset;
        return rcErr(sys_ioctl(fd, params.DEVFSIO_SAPPLY, &rs));
    }
    pub fn jailSet(_: *Real, iov: []params.Iovec, flags: c_int, jid: *i32, desc: *c_int) u16 {
        _ = desc; // written by the kernel through the `desc` parameter
        const rc = jail_set(iov.ptr, @intCast(iov.len), flags);
        if (rc < 0) return errno();
        jid.* = rc;
        g_jid.store(rc, .release);
        return 0;
    }
    pub fn jailRemove(_: *Real, jid: i32) u16 {
        // Already removed by the owner-death handler: the jid may belong to a new jail now.
        if (g_removed.swap(true, .acq_rel)) return 0;
        return rcErr(jail_remove(jid));
    }
    pub fn closeFd(_: *Real, fd: c_int) void {
        _ = c.close(fd);
    }
    pub fn reapAll(_: *Real) void {
        while (true) {
            var st: c_int = 0;
            if (c.wait4(-1, &st, 0, null) < 0 and errno() != errnoCode(.INTR)) return; // ECHILD: none left
        }
    }
    pub fn startPayload(self: *Real, jid: i32, pid: *i32) u16 {
        const supervisor_pid = c.getpid();
        var p = Pipe{};
        if (p.open()) |e| return e;
        const rc = c.fork();
        if (rc < 0) {
            const e = errno();
            p.close();
            return e;
        }
        if (rc == 0) payload(self.spec, self.layout, jid, p, supervisor_pid);
        _ = c.close(p.w);
        self.exec_r = p.r;
        g_payload.store(rc, .release);
        pid.* = rc;
        // The payload holds stdio and the passed descriptors now; the owner must see EOF
        // when it ends, not when the supervisor does.
        var fd: c_int = 0;
        while (fd < self.layout.n) : (fd += 1) _ = c.close(fd);
        return 0;
    }
    pub fn waitPayload(self: *Real, pid: i32) plan_mod.Outcome {
        var st: c_int = 0;
        while (true) {
            const rc = c.wait4(-1, &st, 0, null);
            if (rc < 0) {
                if (errno() == errnoCode(.INTR)) continue;
                // No child at all: cannot happen while the payload lives; report it as killed.
                return .{ .ended = .{ .signaled = SIG.KILL } };
            }
            if (rc == pid) break; // anything else is an orphan, reaped
        }
        // A payload that failed before exec wrote its "E" line into the exec pipe.
        var n: usize = 0;
        while (n < self.payload_line.len) {
            const r = c.read(self.exec_r, self.payload_line[n..].ptr, self.payload_line.len - n);
            if (r < 0 and errno() == errnoCode(.INTR)) continue;
            if (r <= 0) break;
            n += @intCast(r);
        }
        _ = c.close(self.exec_r);
        if (n > 0) return .{ .setup_failed = self.payload_line[0..n] };
        return .{ .ended = params.decodeWait(st) };
    }
    pub fn report(self: *Real, line: []const u8) void {
        writeAll(self.layout.status, line);
    }
};

fn ifIoctl(family: u8, req: c_ulong, arg: *anyopaque) u16 {
    const s = c.socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return errno();
    defer _ = c.close(s);
    return rcErr(sys_ioctl(s, req, arg));
}

/// Walks `rel` beneath `root` one component at a time without following symlinks, creating
/// what is missing when asked. The last component is a file when `like` names a non-directory.
fn ensurePath(root: [:0]const u8, rel: [:0]const u8, create: bool, like: ?[:0]const u8) u16 {
    var leaf_file = false;
    if (like) |src| {
        var st: c.Stat = undefined;
        if (c.stat(src.ptr, &st) != 0) return errno();
        leaf_file = (st.mode & S_IFMT) != S_IFDIR;
    }
    var dir = c.open(root.ptr, .{ .DIRECTORY = true, .CLOEXEC = true });
    if (dir < 0) return errno();
    defer _ = c.close(dir);
    var name: [params.path_max]u8 = undefined;
    var it = std.mem.tokenizeScalar(u8, rel, '/');
    while (it.next()) |comp| {
        if (comp.len >= name.len) return errnoCode(.NAMETOOLONG);
        @memcpy(name[0..comp.len], comp);
        name[comp.len] = 0;
        const z: [*:0]const u8 = @ptrCast(&name);
        const last = it.peek() == null;
        if (last and leaf_file) {
            var st: c.Stat = undefined;
            if (c.fstatat(dir, z, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                return if ((st.mode & S_IFMT) == S_IFREG) 0 else errnoCode(.LOOP);
            }
            if (errno() != errnoCode(.NOENT) or !create) return errno();
            const fd = c.openat(dir, z, .{ .ACCMODE = .WRONLY, .CREAT = true, .EXCL = true, .NOFOLLOW = true, .CLOEXEC = true }, @as(c_uint, 0o644));
            if (fd < 0) return errno();
            _ = c.close(fd);
            return 0;
        }
        var next = c.openat(dir, z, .{ .DIRECTORY = true, .NOFOLLOW = true, .CLOEXEC = true });
        if (next < 0 and errno() == errnoCode(.NOENT) and create) {
            if (c.mkdirat(dir, z, 0o755) != 0 and errno() != errnoCode(.EXIST)) return errno();
            next = c.openat(dir, z, .{ .DIRECTORY = true, .NOFOLLOW = true, .CLOEXEC = true });
        }
        if (next < 0) return errno();
        _ = c.close(dir);
        dir = next;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// The payload (forked from the supervisor): attach, limits, wait for 'g', identity, exec.

const Payload = struct {
    exec_w: c_int,

    /// Reports a failure before exec: the line goes to the supervisor, which forwards it
    /// after teardown, and the payload exits 127.
    fn die(p: *const Payload, e: u16, comptime fmt: []const u8, args: anytype) noreturn {
        var text: [600]u8 = undefined;
        var line: [720]u8 = undefined;
        const t = errtext.format(&text, e, fmt, args);
        writeAll(p.exec_w, params.errorLine(&line, e, t));
        c._exit(127);
    }
};

/// A pooled jail's payload, decoded from its start message (see freebsd_start.zig).
var g_run_spec: Spec = .{};
var g_start_buf: [abi.payload_max]u8 = undefined;

const SyncReader = struct {
    fd: c_int,
    pub fn readFull(r: SyncReader, buf: []u8) bool {
        var off: usize = 0;
        while (off < buf.len) {
            const n = c.read(r.fd, buf[off..].ptr, buf.len - off);
            if (n < 0 and errno() == errnoCode(.INTR)) continue;
            if (n <= 0) return false;
            off += @intCast(n);
        }
        return true;
    }
};

fn payload(spawned: *const Spec, layout: Layout, jid: i32, pipe: Pipe, supervisor_pid: c.pid_t) noreturn {
    // Signals back to their defaults (ignored ones survive exec), nothing blocked.
    var dfl = std.mem.zeroes(c.Sigaction);
    dfl.handler.handler = c.SIG.DFL;
    for (forwarded) |s| _ = c.sigaction(s, &dfl, null);
    _ = c.sigaction(SIG.PIPE, &dfl, null);
    _ = c.sigaction(SIG.INFO, &dfl, null);
    var none: c.sigset_t = undefined;
    _ = c.sigemptyset(&none);
    _ = c.sigprocmask(c.SIG.SETMASK, &none, null);
    var kill_sig: c_int = SIG.KILL;
    _ = procctl(params.P_PID, c.getpid(), params.PROC_PDEATHSIG_CTL, &kill_sig);
    // The supervisor may have died before the line above took effect.
    if (c.getppid() != supervisor_pid) c._exit(127);

    // Keep 0..n-1, status (n), sync (n+1) and the exec pipe (n+2); close the rest, among them
    // the owning jail descriptor and any directory: jail_attach refuses open directories.
    _ = c.close(pipe.r);
    const exec_w = layout.n + 2;
    if (pipe.w != exec_w) {
        if (c.dup2(pipe.w, exec_w) < 0) c._exit(127);
        _ = c.close(pipe.w);
    }
    _ = c.fcntl(exec_w, F_SETFD, FD_CLOEXEC);
    closefrom(exec_w + 1);
    // Every report from here on goes through the exec pipe (forwarded after teardown).
    _ = c.close(layout.status);
    const p = Payload{ .exec_w = exec_w };

    var fd: c_int = 0;
    while (fd < layout.n) : (fd += 1) {
        var st: c.Stat = undefined;
        if (c.fstat(fd, &st) == 0 and (st.mode & S_IFMT) == S_IFDIR)
            p.die(errnoCode(.PERM), "descriptor {d} is a directory: a directory descriptor would let the jail escape", .{fd});
    }

    const name = spawned.jail_name orelse spawned.hostname.?;
    if (jail_attach(jid) != 0) p.die(errno(), "attach to jail {s} (jid {d})", .{ name, jid });

    for (spawned.rlimits.slice()) |r| {
        const res = params.rlimitResource(r.resource) orelse p.die(errnoCode(.INVAL), "rlimit {d}", .{r.resource});
        const lim = Rlimit{ .cur = params.rlimitValue(r.soft), .max = params.rlimitValue(r.hard) };
        if (sys_setrlimit(res, &lim) != 0) p.die(errno(), "setrlimit {d}", .{r.resource});
    }

    // Hold here until the owner says go, or sends a pooled jail's payload; EOF means it died.
    var sf = start_mod.Failure{};
    const spec = start_mod.read(SyncReader{ .fd = layout.sync }, spawned, &g_run_spec, &g_start_buf, &sf) catch |e| switch (e) {
        error.Canceled => p.die(errnoCode(.CANCELED), "jail owner went away before start", .{}),
        error.Unknown => p.die(errnoCode(.PROTO), "unknown start message", .{}),
        error.TooLarge => p.die(errnoCode(.@"2BIG"), "payload of {d} bytes is too large", .{sf.len}),
        error.Invalid => p.die(errnoCode(.INVAL), "invalid payload (record {d}): {s}", .{ sf.tag, @errorName(sf.err) }),
    };
    _ = c.close(layout.sync);

    if (spec.flags.new_session and c.setsid() < 0) p.die(errno(), "setsid", .{});
    var nnp: c_int = params.PROC_NO_NEW_PRIVS_ENABLE;
    if (procctl(params.P_PID, c.getpid(), params.PROC_NO_NEW_PRIVS_CTL, &nnp) != 0) p.die(errno(), "no_new_privs", .{});
    const groups = [_]u32{spec.gid};
    if (setgroups(1, &groups) != 0) p.die(errno(), "setgroups {d}", .{spec.gid});
    if (c.setgid(spec.gid) != 0) p.die(errno(), "setgid {d}", .{spec.gid});
    if (c.setuid(spec.uid) != 0) p.die(errno(), "setuid {d}", .{spec.uid});
    if (c.chdir(spec.cwd.ptr) != 0) p.die(errno(), "chdir {s}", .{spec.cwd});

    var argv: [spec_mod.max_argv + 1:null]?[*:0]const u8 = undefined;
    for (spec.argv.slice(), 0..) |a, i| argv[i] = a;
    argv[spec.argv.len] = null;
    var envp: [spec_mod.max_env + 1:null]?[*:0]const u8 = undefined;
    for (spec.env.slice(), 0..) |e, i| envp[i] = e;
    envp[spec.env.len] = null;
    const file = std.mem.span(spec.argv.slice()[0]);
    const e = execvpe(file, &argv, &envp, spec.env.slice());
    p.die(e, "exec {s}", .{file});
}

/// execve, searching PATH from the payload's own environment for names without a slash.
fn execvpe(file: []const u8, argv: [*:null]const ?[*:0]const u8, envp: [*:null]const ?[*:0]const u8, env: []const [*:0]const u8) u16 {
    var it = params.PathIter.init(file, params.pathOf(env));
    var first: u16 = errnoCode(.NOENT);
    var buf: [params.path_max]u8 = undefined;
    while (it.next(&buf)) |path| {
        _ = c.execve(path.ptr, argv, envp);
        const e = errno();
        if (it.direct) return e;
        // Like execvp: remember a permission problem, keep looking past plain absence.
        if (e == errnoCode(.ACCES)) first = e else if (e != errnoCode(.NOENT) and e != errnoCode(.NOTDIR)) return e;
    }
    return first;
}
