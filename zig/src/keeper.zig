//! The keeper: pid 1 of every Linux jail. A separate tiny static executable (embedded in the
//! shim and executed from a sealed memfd), so nothing of the Bun process (its memory, its
//! environment, /proc/1/exe pointing at the host's bun) is visible inside the jail.
//!
//! It forks the payload, forwards signals to it, reaps every orphan, reports the payload's
//! end on the status descriptor (fd 3), and exits: the kernel then kills whatever is left in
//! the pid namespace. It is non-dumpable, so even root inside the jail cannot read its memory,
//! its environment, or open its executable.
//!
//! argv: lj-keeper UID GID CAPS_HEX FLAGS NPASS CWD -- ARGV...   envp: the payload's.
//! fds:  0-2 stdio, 3 status, 4..4+NPASS-1 descriptors passed to the payload as 3, 4, ...
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const W_ALL = sys.W_ALL;
const F_DUPFD_CLOEXEC = sys.F_DUPFD_CLOEXEC;
const abi = @import("abi.zig");
const seccomp = @import("seccomp.zig");
const caps_mod = @import("caps.zig");

const status_fd: i32 = 3;
const flag_new_session: u32 = 1 << 2;
const flag_no_seccomp: u32 = 1 << 3;
const flag_trace: u32 = 1 << 7;

var tracing = false;
fn mark(fd: i32, step: []const u8) void {
    if (tracing) sys.traceMark(fd, step);
}

var payload_pid: std.atomic.Value(i32) = .init(0);

const forwarded = [_]u8{ linux.SIG.INT, linux.SIG.HUP, linux.SIG.QUIT, linux.SIG.TERM, linux.SIG.USR1, linux.SIG.USR2, linux.SIG.WINCH, linux.SIG.CONT };

fn forward(sig: i32) callconv(.c) void {
    const pid = payload_pid.load(.acquire);
    // pid 0 would signal our own process group: the payload does not exist yet.
    if (pid > 0) _ = linux.kill(pid, sig);
}

pub fn main() noreturn {
    _ = linux.prctl(@intFromEnum(linux.PR.SET_DUMPABLE), 0, 0, 0, 0);
    const args = parseArgs() orelse fatal(linux.E.INVAL, "keeper: bad arguments");
    tracing = args.flags & flag_trace != 0;
    mark(status_fd, "keeper started");
    // By now the owner has placed the jail in its cgroups: root the jail's view there.
    if (errno(linux.unshare(linux.CLONE.NEWCGROUP))) |e| fatal(e, "unshare cgroup namespace");

    // Only stdio, status and the passed descriptors may reach the payload.
    _ = linux.syscall3(.close_range, @intCast(4 + args.npass), std.math.maxInt(u32), 0);

    var act = linux.Sigaction{ .handler = .{ .handler = forward }, .mask = linux.sigemptyset(), .flags = linux.SA.RESTART };
    for (forwarded) |sig| _ = linux.sigaction(sig, &act, null);

    // Until the payload's pid is known, a forwarded signal would have nowhere to go: hold the
    // signals pending (not lost) across the fork.
    var held = linux.sigemptyset();
    for (forwarded) |sig| linux.sigaddset(&held, sig);
    _ = linux.sigprocmask(linux.SIG.BLOCK, &held, null);
    const rc = linux.syscall5(.clone, linux.SIG.CHLD, 0, 0, 0, 0);
    if (errno(rc)) |e| fatal(e, "fork payload");
    if (rc == 0) payload(args);
    payload_pid.store(@intCast(rc), .release);
    mark(status_fd, "payload forked");
    _ = linux.sigprocmask(linux.SIG.UNBLOCK, &held, null);

    // The keeper itself keeps only the right to signal the payload.
    _ = caps_mod.restrict(1 << caps_mod.CAP_KILL, 0);
    _ = linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0);

    while (true) {
        var status: u32 = 0;
        const r = linux.wait4(-1, &status, W_ALL, null);
        if (errno(r)) |e| {
            if (e == .INTR) continue;
            fatal(e, "wait for payload");
        }
        if (@as(i32, @intCast(r)) != payload_pid.load(.acquire)) continue; // an orphan: reaped
        mark(status_fd, "payload ran");
        report(status);
        linux.exit_group(0);
    }
}

const Args = struct {
    uid: u32,
    gid: u32,
    caps: u64,
    flags: u32,
    npass: u32,
    cwd: [*:0]const u8,
    argv: [*:null]const ?[*:0]const u8,
};

fn parseArgs() ?Args {
    const argv = std.os.argv;
    if (argv.len < 9) return null;
    if (!std.mem.eql(u8, std.mem.span(argv[7]), "--")) return null;
    return .{
        .uid = std.fmt.parseInt(u32, std.mem.span(argv[1]), 10) catch return null,
        .gid = std.fmt.parseInt(u32, std.mem.span(argv[2]), 10) catch return null,
        .caps = std.fmt.parseInt(u64, std.mem.span(argv[3]), 16) catch return null,
        .flags = std.fmt.parseInt(u32, std.mem.span(argv[4]), 10) catch return null,
        .npass = std.fmt.parseInt(u32, std.mem.span(argv[5]), 10) catch return null,
        .cwd = argv[6],
        .argv = @ptrCast(argv.ptr + 8),
    };
}

fn report(status: u32) void {
    var buf: [32]u8 = undefined;
    const line = if (linux.W.IFSIGNALED(status))
        std.fmt.bufPrint(&buf, "{c} {d}\n", .{ abi.status_signal, linux.W.TERMSIG(status) })
    else
        std.fmt.bufPrint(&buf, "{c} {d}\n", .{ abi.status_exit, linux.W.EXITSTATUS(status) });
    const text = line catch return;
    _ = linux.write(status_fd, text.ptr, text.len);
}

fn fatalOn(fd: i32, e: linux.E, what: []const u8, detail: []const u8) noreturn {
    var buf: [600]u8 = undefined;
    const name = std.enums.tagName(linux.E, e) orelse "?";
    const line = std.fmt.bufPrint(&buf, "{c} {d} {s}{s}: E{s}\n", .{ abi.status_error, @intFromEnum(e), what, detail, name }) catch "E 5 keeper\n";
    _ = linux.write(fd, line.ptr, line.len);
    linux.exit_group(127);
}

fn fatal(e: linux.E, what: []const u8) noreturn {
    fatalOn(status_fd, e, what, "");
}

/// In the forked payload: descriptors, session, identity, capabilities, filter, then exec.
fn payload(a: Args) noreturn {
    const dfl = linux.Sigaction{ .handler = .{ .handler = linux.SIG.DFL }, .mask = linux.sigemptyset(), .flags = 0 };
    for (forwarded) |sig| _ = linux.sigaction(sig, &dfl, null);
    const none = linux.sigemptyset();
    _ = linux.sigprocmask(linux.SIG.SETMASK, &none, null);

    // Keep the status pipe out of the way (close-on-exec) to report a failed exec.
    const sfd_rc = linux.fcntl(status_fd, F_DUPFD_CLOEXEC, @intCast(4 + a.npass));
    if (errno(sfd_rc)) |e| fatal(e, "dup status");
    const sfd: i32 = @intCast(sfd_rc);
    var i: u32 = 0;
    while (i < a.npass) : (i += 1) {
        if (errno(linux.dup2(@intCast(4 + i), @intCast(3 + i)))) |e| fatalOn(sfd, e, "pass descriptor", "");
    }
    _ = linux.close(@intCast(3 + a.npass));

    if (a.flags & flag_new_session != 0) _ = linux.setsid();

    if (caps_mod.dropBounding(a.caps)) |e| fatalOn(sfd, e, "drop capability bounding set", "");
    const groups = [_]u32{a.gid};
    if (errno(linux.setgroups(1, &groups))) |e| fatalOn(sfd, e, "setgroups", "");
    if (errno(linux.setresgid(a.gid, a.gid, a.gid))) |e| fatalOn(sfd, e, "setgid", "");
    if (a.caps != 0) _ = linux.prctl(@intFromEnum(linux.PR.SET_KEEPCAPS), 1, 0, 0, 0);
    if (errno(linux.setresuid(a.uid, a.uid, a.uid))) |e| fatalOn(sfd, e, "setuid", "");
    if (caps_mod.restrict(a.caps, a.caps)) |e| fatalOn(sfd, e, "set capabilities", "");
    if (errno(linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0))) |e| fatalOn(sfd, e, "no_new_privs", "");
    if (a.flags & flag_no_seccomp == 0) if (seccomp.install()) |e| fatalOn(sfd, e, "install seccomp filter", "");

    if (errno(linux.chdir(a.cwd))) |e| fatalOn(sfd, e, "chdir ", std.mem.span(a.cwd));
    mark(sfd, "identity, filter");
    const e = execvpe(a.argv);
    fatalOn(sfd, e, "exec ", std.mem.span(a.argv[0].?));
}

const default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// execve, searching PATH (from the payload's own environment) for names without a slash.
fn execvpe(argv: [*:null]const ?[*:0]const u8) linux.E {
    const envp: [*:null]const ?[*:0]const u8 = @ptrCast(std.os.environ.ptr);
    const file = std.mem.span(argv[0].?);
    if (file.len == 0) return .NOENT;
    if (std.mem.indexOfScalar(u8, file, '/') != null) return errno(linux.execve(argv[0].?, argv, envp)) orelse .NOEXEC;

    var search: []const u8 = default_path;
    for (std.os.environ) |kv| {
        const s = std.mem.span(kv);
        if (std.mem.startsWith(u8, s, "PATH=")) search = s[5..];
    }
    var first: linux.E = .NOENT;
    var it = std.mem.splitScalar(u8, search, ':');
    while (it.next()) |dir| {
        var buf: [4096]u8 = undefined;
        const d = if (dir.len == 0) "." else dir;
        const full = std.fmt.bufPrintZ(&buf, "{s}/{s}", .{ d, file }) catch continue;
        const err = errno(linux.execve(full.ptr, argv, envp)) orelse .NOEXEC;
        // Like execvp: remember a permission problem, keep looking past plain absence.
        if (err == .ACCES) first = .ACCES else if (err != .NOENT and err != .NOTDIR) return err;
    }
    return first;
}
