//! `ljexec`: runs a command inside a running Linux jail, as confined as the jail's own payload
//! (a pod's exec probe, `kubectl exec`). Linux only; a small static executable.
//!
//!   ljexec --pid PID --uid UID --gid GID [--cwd DIR] [--cgroup DIR]... -- ARGV...
//!
//! PID is the jail's first process (its keeper) as the host sees it; each --cgroup is one of the
//! jail's cgroup directories as the host sees it; --cwd is a directory in the jail (default /).
//! The command's environment is ljexec's own, exactly (PATH from it finds ARGV[0]). Only
//! descriptors 0-2 reach the command.
//!
//! The command gets what the jail's payload gets: the jail's cgroups and cgroup namespace, its
//! mount, UTS, IPC, network and pid namespaces (and user namespace, if it has one), its root,
//! its rlimits, no capabilities (bounding set empty), the given uid and gid as its only ids,
//! no_new_privs and the keeper's seccomp filter (seccomp.zig). ljexec itself stays outside the
//! jail's pid namespace, non-dumpable, waiting for the command and forwarding TERM, INT and HUP.
//!
//! Exit status: the command's, or 128+N when a signal N ended it; 126 (127: not found) when the
//! command cannot be executed; 125 when ljexec fails before that, with the step on stderr.
const std = @import("std");

/// A failed safety check ends only the process it happens in, at once (see panic.zig).
pub const panic = std.debug.FullPanic(@import("panic.zig").handler);
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const caps = @import("caps.zig");
const seccomp = @import("seccomp.zig");
const errtext = @import("errtext.zig");

const setup_failed: u8 = 125;
const max_cgroups = 16;

pub const Args = struct {
    pid: i32 = 0,
    uid: u32 = 0,
    gid: u32 = 0,
    cwd: [*:0]const u8 = "/",
    cgroups: [max_cgroups][*:0]const u8 = undefined,
    ncgroups: usize = 0,
    /// Where the command starts in the argument list parsed.
    command: usize = 0,
};

/// Parses the arguments after the program's name. On error.Usage, `why` says what is wrong.
pub fn parse(argv: []const [*:0]const u8, why: *[]const u8) error{Usage}!Args {
    var a = Args{};
    var have_pid = false;
    var have_uid = false;
    var have_gid = false;
    var i: usize = 0;
    while (i < argv.len) : (i += 1) {
        const flag = std.mem.span(argv[i]);
        if (std.mem.eql(u8, flag, "--")) {
            a.command = i + 1;
            break;
        }
        if (i + 1 >= argv.len) return usage(why, "a flag without its value, or no -- before the command");
        i += 1;
        const value = argv[i];
        const text = std.mem.span(value);
        if (std.mem.eql(u8, flag, "--pid")) {
            a.pid = std.fmt.parseInt(i32, text, 10) catch return usage(why, "--pid takes a process id");
            if (a.pid <= 0) return usage(why, "--pid takes a process id");
            have_pid = true;
        } else if (std.mem.eql(u8, flag, "--uid")) {
            a.uid = id(text) orelse return usage(why, "--uid takes a user id (0 to 4294967294)");
            have_uid = true;
        } else if (std.mem.eql(u8, flag, "--gid")) {
            a.gid = id(text) orelse return usage(why, "--gid takes a group id (0 to 4294967294)");
            have_gid = true;
        } else if (std.mem.eql(u8, flag, "--cwd")) {
            if (text.len == 0 or text[0] != '/') return usage(why, "--cwd takes an absolute directory in the jail");
            a.cwd = value;
        } else if (std.mem.eql(u8, flag, "--cgroup")) {
            if (text.len == 0 or text[0] != '/') return usage(why, "--cgroup takes an absolute cgroup directory");
            if (a.ncgroups == max_cgroups) return usage(why, "too many --cgroup directories");
            a.cgroups[a.ncgroups] = value;
            a.ncgroups += 1;
        } else return usage(why, "unknown flag (ljexec --pid PID --uid UID --gid GID [--cwd DIR] [--cgroup DIR]... -- ARGV...)");
    }
    if (a.command == 0) return usage(why, "no -- before the command");
    if (a.command >= argv.len) return usage(why, "no command after --");
    if (!have_pid or !have_uid or !have_gid) return usage(why, "--pid, --uid and --gid are required");
    return a;
}

fn usage(why: *[]const u8, text: []const u8) error{Usage} {
    why.* = text;
    return error.Usage;
}

/// An id for setres[ug]id: -1 there means "unchanged" (root's), so it is not one.
fn id(text: []const u8) ?u32 {
    const n = std.fmt.parseInt(u32, text, 10) catch return null;
    return if (n == std.math.maxInt(u32)) null else n;
}

/// Writes "ljexec: <what>[: E<NAME>]" on stderr.
fn say(e: ?linux.E, comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const code: errtext.Errno = if (e) |x| @intCast(@intFromEnum(x)) else 0;
    const text = errtext.format(buf[0 .. buf.len - 1], code, "ljexec: " ++ fmt, args);
    buf[text.len] = '\n';
    _ = linux.write(2, &buf, text.len + 1);
}

fn fail(e: ?linux.E, comptime fmt: []const u8, args: anytype) noreturn {
    say(e, fmt, args);
    linux.exit_group(setup_failed);
}

/// Fails with the step's name when a raw syscall result is an error; otherwise the result.
fn check(rc: usize, comptime fmt: []const u8, args: anytype) usize {
    if (errno(rc)) |e| fail(e, fmt, args);
    return rc;
}

const forwarded = [_]u8{ linux.SIG.TERM, linux.SIG.INT, linux.SIG.HUP };
var command_pid: std.atomic.Value(i32) = .init(0);

fn forward(sig: i32) callconv(.c) void {
    const pid = command_pid.load(.acquire);
    if (pid > 0) _ = linux.kill(pid, sig);
}

pub fn main() u8 {
    // Nothing in the jail may read this process's memory or trace it.
    _ = check(linux.prctl(@intFromEnum(linux.PR.SET_DUMPABLE), 0, 0, 0, 0), "set non-dumpable", .{});
    // Whatever the caller left open stays on the host's side.
    _ = check(linux.syscall3(.close_range, 3, std.math.maxInt(u32), 0), "close inherited descriptors", .{});
    var why: []const u8 = "";
    const argv: []const [*:0]const u8 = @ptrCast(std.os.argv[1..]);
    const a = parse(argv, &why) catch fail(null, "{s}", .{why});

    // The cgroups first, as the host sees them: the jail's cgroup namespace hides them after.
    for (a.cgroups[0..a.ncgroups]) |dir| joinCgroup(dir);

    const jail = Target.open(a.pid);
    const self_pidfd: i32 = @intCast(check(linux.pidfd_open(linux.getpid(), 0), "pidfd of ljexec", .{}));
    // Set before entering: a user namespace would take away the right to raise a hard limit.
    jail.copyRlimits();
    jail.enter();

    var held = linux.sigemptyset();
    for (forwarded) |sig| linux.sigaddset(&held, sig);
    _ = linux.sigprocmask(linux.SIG.BLOCK, &held, null);
    var act = linux.Sigaction{ .handler = .{ .handler = forward }, .mask = linux.sigemptyset(), .flags = linux.SA.RESTART };
    for (forwarded) |sig| _ = linux.sigaction(sig, &act, null);

    // Entering a pid namespace takes effect for children: the command is one.
    const rc = check(linux.fork(), "fork", .{});
    if (rc == 0) command(a, argv, jail.root, self_pidfd);
    command_pid.store(@intCast(rc), .release);
    _ = linux.sigprocmask(linux.SIG.UNBLOCK, &held, null);

    // The waiting side keeps only the right to signal the command.
    _ = caps.restrict(1 << caps.CAP_KILL, 0);
    _ = linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0);
    while (true) {
        var status: u32 = 0;
        const r = linux.wait4(@intCast(rc), &status, 0, null);
        if (errno(r)) |e| {
            if (e == .INTR) continue;
            fail(e, "wait for the command", .{});
        }
        if (linux.W.IFSIGNALED(status)) return @truncate(128 + linux.W.TERMSIG(status));
        return linux.W.EXITSTATUS(status);
    }
}

fn joinCgroup(dir: [*:0]const u8) void {
    var path: [linux.PATH_MAX]u8 = undefined;
    const procs = std.fmt.bufPrintZ(&path, "{s}/cgroup.procs", .{dir}) catch fail(.NAMETOOLONG, "join cgroup {s}", .{dir});
    const fd: i32 = @intCast(check(linux.open(procs, .{ .ACCMODE = .WRONLY, .CLOEXEC = true }, 0), "join cgroup {s}", .{dir}));
    defer _ = linux.close(fd);
    // "0": the writing process itself.
    _ = check(linux.write(fd, "0", 1), "join cgroup {s}", .{dir});
}

/// The jail's first process, pinned by a pidfd, and what of it the command takes.
const Target = struct {
    pid: i32,
    pidfd: i32,
    /// The jail's root directory (O_PATH).
    root: i32,
    rlimits: [rlimit_count][2]u64 = undefined,
    /// The jail has a user namespace of its own, to enter first.
    userns: bool,

    const rlimit_count = 16; // RLIM_NLIMITS

    fn open(pid: i32) Target {
        const pidfd_rc = linux.pidfd_open(pid, 0);
        if (errno(pidfd_rc)) |e| fail(e, "no process {d}", .{pid});
        var t = Target{ .pid = pid, .pidfd = @intCast(pidfd_rc), .root = -1, .userns = false };
        if (!firstOfItsPidNamespace(pid)) fail(null, "process {d} is not a jail's first process (pid 1 of a pid namespace of its own)", .{pid});
        var path: [64]u8 = undefined;
        const root = std.fmt.bufPrintZ(&path, "/proc/{d}/root", .{pid}) catch unreachable;
        t.root = @intCast(check(linux.open(root, .{ .PATH = true, .DIRECTORY = true, .CLOEXEC = true }, 0), "open the jail's root {s}", .{root}));
        t.userns = !sameNamespace(pid, "user");
        for (&t.rlimits, 0..) |*lim, r| {
            _ = check(linux.syscall4(.prlimit64, @intCast(pid), r, 0, @intFromPtr(lim)), "read the jail's rlimit {d}", .{r});
        }
        // All of the above came from /proc/PID: still the pidfd's process, not a reused pid.
        if (sys.pidfdEnded(t.pidfd)) fail(.SRCH, "process {d} ended", .{pid});
        return t;
    }

    fn copyRlimits(t: *const Target) void {
        for (&t.rlimits, 0..) |*lim, r| {
            _ = check(linux.syscall4(.prlimit64, 0, r, @intFromPtr(lim), 0), "set the jail's rlimit {d}", .{r});
        }
    }

    /// Joins the jail's namespaces: one setns on its pidfd, or (kernels before 5.8) one
    /// namespace after the other, all opened before the first join changes what /proc is.
    fn enter(t: *const Target) void {
        const N = linux.CLONE;
        const user: u32 = if (t.userns) N.NEWUSER else 0;
        const all: u32 = user | N.NEWNS | N.NEWUTS | N.NEWIPC | N.NEWNET | N.NEWPID | N.NEWCGROUP;
        const rc = linux.syscall2(.setns, @intCast(t.pidfd), all);
        const e = errno(rc) orelse return;
        if (e != .INVAL) fail(e, "enter the jail's namespaces", .{});

        const names = [_][]const u8{ "user", "cgroup", "ipc", "uts", "net", "pid", "mnt" };
        var fds: [names.len]i32 = undefined;
        for (names, &fds) |name, *fd| {
            if (std.mem.eql(u8, name, "user") and !t.userns) {
                fd.* = -1;
                continue;
            }
            var path: [64]u8 = undefined;
            const p = std.fmt.bufPrintZ(&path, "/proc/{d}/ns/{s}", .{ t.pid, name }) catch unreachable;
            fd.* = @intCast(check(linux.open(p, .{ .CLOEXEC = true }, 0), "open {s}", .{p}));
        }
        if (sys.pidfdEnded(t.pidfd)) fail(.SRCH, "process {d} ended", .{t.pid});
        for (names, fds) |name, fd| {
            if (fd < 0) continue;
            _ = check(linux.syscall2(.setns, @intCast(fd), 0), "enter the jail's {s} namespace", .{name});
            _ = linux.close(fd);
        }
    }
};

/// Whether `pid` is pid 1 in a pid namespace below ours (the last NSpid of its status is 1).
fn firstOfItsPidNamespace(pid: i32) bool {
    var path: [64]u8 = undefined;
    const p = std.fmt.bufPrintZ(&path, "/proc/{d}/status", .{pid}) catch unreachable;
    const fd: i32 = @intCast(check(linux.open(p, .{ .CLOEXEC = true }, 0), "read {s}", .{p}));
    defer _ = linux.close(fd);
    var buf: [8192]u8 = undefined;
    var len: usize = 0;
    while (len < buf.len) {
        const n = check(linux.read(fd, buf[len..].ptr, buf.len - len), "read {s}", .{p});
        if (n == 0) break;
        len += n;
    }
    return nspidIsFirst(buf[0..len]);
}

/// From /proc/PID/status text: its NSpid line has more than one pid and ends in 1.
pub fn nspidIsFirst(status: []const u8) bool {
    var lines = std.mem.splitScalar(u8, status, '\n');
    while (lines.next()) |line| {
        if (!std.mem.startsWith(u8, line, "NSpid:")) continue;
        var ids = std.mem.tokenizeAny(u8, line["NSpid:".len..], " \t");
        var count: usize = 0;
        var last: []const u8 = "";
        while (ids.next()) |v| {
            count += 1;
            last = v;
        }
        return count > 1 and std.mem.eql(u8, last, "1");
    }
    return false;
}

/// Whether `pid` shares our namespace of this kind (its /proc/PID/ns link names the same one).
fn sameNamespace(pid: i32, comptime kind: []const u8) bool {
    var mine: [64]u8 = undefined;
    var theirs: [64]u8 = undefined;
    var path: [64]u8 = undefined;
    const own = "/proc/self/ns/" ++ kind;
    const a = check(linux.readlink(own, &mine, mine.len), "read {s}", .{own});
    const p = std.fmt.bufPrintZ(&path, "/proc/{d}/ns/" ++ kind, .{pid}) catch unreachable;
    const b = check(linux.readlink(p, &theirs, theirs.len), "read {s}", .{p});
    return std.mem.eql(u8, mine[0..a], theirs[0..b]);
}

/// The command's process, in the jail's pid namespace: its root, identity, filter, exec.
fn command(a: Args, argv: []const [*:0]const u8, root: i32, parent: i32) noreturn {
    const dfl = linux.Sigaction{ .handler = .{ .handler = linux.SIG.DFL }, .mask = linux.sigemptyset(), .flags = 0 };
    for (forwarded) |sig| _ = linux.sigaction(sig, &dfl, null);
    const none = linux.sigemptyset();
    _ = linux.sigprocmask(linux.SIG.SETMASK, &none, null);
    _ = check(linux.fchdir(root), "enter the jail's root", .{});
    _ = check(linux.chroot("."), "chroot to the jail's root", .{});

    if (caps.dropBounding(0)) |e| fail(e, "drop capability bounding set", .{});
    const groups = [_]u32{a.gid};
    _ = check(linux.setgroups(1, &groups), "setgroups {d}", .{a.gid});
    _ = check(linux.setresgid(a.gid, a.gid, a.gid), "setgid {d}", .{a.gid});
    _ = check(linux.setresuid(a.uid, a.uid, a.uid), "setuid {d}", .{a.uid});
    // A uid of 0 keeps its capabilities through setuid: none of them stay.
    if (caps.restrict(0, 0)) |e| fail(e, "drop capabilities", .{});
    // As the command's ids: a directory they may not enter stays closed to them.
    _ = check(linux.chdir(a.cwd), "chdir {s}", .{a.cwd});
    // Die with ljexec, even if it is SIGKILLed (a probe's timeout). After the ids: changing
    // them clears the parent-death signal. ljexec may be gone already.
    _ = check(linux.prctl(@intFromEnum(linux.PR.SET_PDEATHSIG), linux.SIG.KILL, 0, 0, 0), "set parent-death signal", .{});
    if (sys.pidfdEnded(parent)) linux.exit_group(setup_failed);
    _ = check(linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0), "no_new_privs", .{});
    if (seccomp.install()) |e| fail(e, "install seccomp filter", .{});

    const args: [*:null]const ?[*:0]const u8 = @ptrCast(argv.ptr + a.command);
    const envp: [*:null]const ?[*:0]const u8 = @ptrCast(std.os.environ.ptr);
    const e = sys.execvpe(args, envp);
    say(e, "exec {s}", .{argv[a.command]});
    linux.exit_group(if (e == .NOENT) 127 else 126);
}

fn parseOk(argv: []const [*:0]const u8) !Args {
    var why: []const u8 = "";
    return parse(argv, &why);
}

fn parseWhy(argv: []const [*:0]const u8) []const u8 {
    var why: []const u8 = "";
    _ = parse(argv, &why) catch return why;
    return "";
}

test "parse: ids, cwd, cgroups and where the command starts" {
    const argv = [_][*:0]const u8{ "--pid", "42", "--uid", "1000", "--gid", "100", "--cwd", "/app", "--cgroup", "/sys/fs/cgroup/a", "--cgroup", "/sys/fs/cgroup/b", "--", "sh", "-c", "true" };
    const a = try parseOk(&argv);
    try std.testing.expectEqual(@as(i32, 42), a.pid);
    try std.testing.expectEqual(@as(u32, 1000), a.uid);
    try std.testing.expectEqual(@as(u32, 100), a.gid);
    try std.testing.expectEqualStrings("/app", std.mem.span(a.cwd));
    try std.testing.expectEqual(@as(usize, 2), a.ncgroups);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/b", std.mem.span(a.cgroups[1]));
    try std.testing.expectEqual(@as(usize, 13), a.command);
}

test "parse: defaults, and a command that looks like flags" {
    const argv = [_][*:0]const u8{ "--uid", "0", "--gid", "0", "--pid", "7", "--", "--pid", "x" };
    const a = try parseOk(&argv);
    try std.testing.expectEqualStrings("/", std.mem.span(a.cwd));
    try std.testing.expectEqual(@as(usize, 0), a.ncgroups);
    try std.testing.expectEqual(@as(usize, 7), a.command);
}

test "parse: refuses what it cannot run" {
    try std.testing.expectEqualStrings("--pid, --uid and --gid are required", parseWhy(&.{ "--pid", "7", "--uid", "1", "--", "true" }));
    try std.testing.expectEqualStrings("no command after --", parseWhy(&.{ "--pid", "7", "--uid", "1", "--gid", "1", "--" }));
    try std.testing.expectEqualStrings("no -- before the command", parseWhy(&.{ "--pid", "7", "--uid", "1", "--gid", "1" }));
    try std.testing.expectEqualStrings("--pid takes a process id", parseWhy(&.{ "--pid", "0", "--uid", "1", "--gid", "1", "--", "true" }));
    try std.testing.expectEqualStrings("--pid takes a process id", parseWhy(&.{ "--pid", "x", "--", "true" }));
    // -1 would leave setresuid's ids as they are: root's.
    try std.testing.expectEqualStrings("--uid takes a user id (0 to 4294967294)", parseWhy(&.{ "--uid", "4294967295", "--", "true" }));
    try std.testing.expectEqualStrings("--gid takes a group id (0 to 4294967294)", parseWhy(&.{ "--gid", "-1", "--", "true" }));
    try std.testing.expectEqualStrings("--cwd takes an absolute directory in the jail", parseWhy(&.{ "--cwd", "app", "--", "true" }));
    try std.testing.expectEqualStrings("--cgroup takes an absolute cgroup directory", parseWhy(&.{ "--cgroup", "", "--", "true" }));
    try std.testing.expect(std.mem.startsWith(u8, parseWhy(&.{ "--user", "1", "--", "true" }), "unknown flag"));
    try std.testing.expectEqualStrings("a flag without its value, or no -- before the command", parseWhy(&.{"--pid"}));
}

test "nspidIsFirst: pid 1 of a namespace below, not the host's init or a plain process" {
    try std.testing.expect(nspidIsFirst("Name:\tlj-keeper\nNSpid:\t4242\t1\nNSpgid:\t4242\t1\n"));
    try std.testing.expect(!nspidIsFirst("Name:\tsystemd\nNSpid:\t1\n"));
    try std.testing.expect(!nspidIsFirst("Name:\tbun\nNSpid:\t4242\n"));
    try std.testing.expect(!nspidIsFirst("Name:\tsh\nNSpid:\t4243\t2\n"));
    try std.testing.expect(!nspidIsFirst("Name:\tx\n"));
}
