//! The keeper: pid 1 of every Linux jail. A separate tiny static executable (embedded in the
//! shim and executed from a sealed memfd), so nothing of the Bun process (its memory, its
//! environment, /proc/1/exe pointing at the host's bun) is visible inside the jail.
//!
//! The jail's setup executes it as soon as the root is built; it then waits on the sync pipe
//! for its owner's go (a pre-made jail waits here, its filter already installed, so starting
//! it costs one clone and the payload's exec). It starts the payload, forwards signals to it,
//! reaps every orphan, reports the payload's end on the status descriptor (fd 3), and exits:
//! the kernel then kills whatever is left in the pid namespace. It is non-dumpable, so even
//! root inside the jail cannot read its memory, its environment, or open its executable.
//!
//! argv: lj-keeper UID GID CAPS_HEX FLAGS NPASS CWD -- ARGV...   envp: the payload's.
//! fds:  0-2 stdio, 3 status, 4..4+NPASS-1 descriptors passed to the payload as 3, 4, ...,
//!       4+NPASS the sync pipe: "g" runs ARGV, "p" + u32 length + records runs that payload.
const std = @import("std");

/// A failed safety check ends only the process it happens in, at once (see panic.zig).
pub const panic = std.debug.FullPanic(@import("panic.zig").handler);
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const W_ALL = sys.W_ALL;
const F_DUPFD_CLOEXEC = sys.F_DUPFD_CLOEXEC;
const abi = @import("abi.zig");
const seccomp = @import("seccomp.zig");
const caps_mod = @import("caps.zig");
const spec_mod = @import("spec.zig");

const status_fd: i32 = 3;

/// Marks of a traced jail, written with the report. The payload's process appends its own
/// while it borrows our memory (we are suspended until it executes).
var trace = sys.Trace{};
fn mark(step: []const u8) void {
    trace.mark(step);
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
    const parsed = parseArgs() orelse fatal(linux.E.INVAL, "keeper: bad arguments");
    trace.on = parsed.flags.trace;
    mark("keeper started");
    const sync_fd: i32 = @intCast(4 + parsed.npass);
    // Only stdio, status, the passed descriptors and the sync pipe are left.
    _ = linux.syscall3(.close_range, @intCast(sync_fd + 1), std.math.maxInt(u32), 0);

    // Signals for the payload are held pending (not lost) from here until it exists.
    var act = linux.Sigaction{ .handler = .{ .handler = forward }, .mask = linux.sigemptyset(), .flags = linux.SA.RESTART };
    for (forwarded) |sig| _ = linux.sigaction(sig, &act, null);
    var held = linux.sigemptyset();
    for (forwarded) |sig| linux.sigaddset(&held, sig);
    _ = linux.sigprocmask(linux.SIG.BLOCK, &held, null);

    // The jail's placer has put it in its cgroups before executing us; a user-namespaced jail
    // is placed by its owner, who says go only after that. Then root the jail's view of the
    // cgroup tree there, and install the filter (which forbids new namespaces): before the
    // wait when we can, so a pre-made jail has nothing left to do but start its payload.
    const made_filtered = !parsed.flags.no_seccomp;
    const userns = parsed.flags.userns;
    if (!userns) {
        unshareCgroup();
        if (made_filtered) installFilter();
    }
    const args = awaitStart(sync_fd, parsed, made_filtered and !userns);
    _ = linux.close(sync_fd);
    const wants_filter = !args.flags.no_seccomp;
    if (userns) unshareCgroup();
    if (wants_filter and (userns or !made_filtered)) installFilter();
    mark("cgroup namespace, filter, go");

    // vfork-style: the payload's process borrows our memory until it executes (no page
    // tables to copy, no copy-on-write faults after), on a stack of its own; we sleep until then.
    const rc = linux.clone(payloadEntry, @intFromPtr(&payload_stack) + payload_stack.len, linux.CLONE.VM | linux.CLONE.VFORK | linux.SIG.CHLD, @intFromPtr(&args), null, 0, null);
    if (errno(rc)) |e| fatal(e, "start payload");
    payload_pid.store(@intCast(rc), .release);
    mark("payload executed");
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
        mark("payload ran");
        report(status);
        linux.exit_group(0);
    }
}

const Args = struct {
    uid: u32,
    gid: u32,
    caps: u64,
    /// The jail's flags (spec.Flags), as the jail's setup passed them.
    flags: spec_mod.Flags,
    npass: u32,
    cwd: [*:0]const u8,
    argv: [*:null]const ?[*:0]const u8,
    envp: [*:null]const ?[*:0]const u8,
};

fn unshareCgroup() void {
    if (errno(linux.unshare(linux.CLONE.NEWCGROUP))) |e| fatal(e, "unshare cgroup namespace");
}

/// The seccomp filter, on the keeper itself: the payload inherits it, and the keeper needs
/// none of what it denies.
fn installFilter() void {
    if (errno(linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0))) |e| fatal(e, "no_new_privs");
    if (seccomp.install()) |e| fatal(e, "install seccomp filter");
}

var payload_buf: [abi.payload_max]u8 = undefined;
var payload_spec: spec_mod.Spec = .{};
var payload_argv: [spec_mod.max_argv:null]?[*:0]const u8 = undefined;
var payload_envp: [spec_mod.max_env:null]?[*:0]const u8 = undefined;

/// Waits for the owner's go. "g" runs what the keeper was executed with; "p" brings a payload
/// of its own (a pre-made jail). EOF: the owner died or gave up on the jail.
fn awaitStart(fd: i32, given: Args, filtered: bool) Args {
    const gone = "jail owner went away before start";
    var go: [1]u8 = undefined;
    if (!readFull(fd, &go)) fatal(.CANCELED, gone);
    if (go[0] == abi.sync_go) return given;
    if (go[0] != abi.sync_payload) fatal(.PROTO, "unknown start message");
    var lenb: [4]u8 = undefined;
    if (!readFull(fd, &lenb)) fatal(.CANCELED, gone);
    const len = std.mem.readInt(u32, &lenb, .little);
    if (len > payload_buf.len) fatalFmt(.@"2BIG", "payload of {d} bytes is too large", .{len});
    if (!readFull(fd, payload_buf[0..len])) fatal(.CANCELED, gone);
    var failure: spec_mod.DecodeFailure = undefined;
    spec_mod.decodePayload(payload_buf[0..len], &payload_spec, &failure) catch |e|
        fatalFmt(.INVAL, "invalid payload (record {d}): {s}", .{ failure.tag, @errorName(e) });
    const p = &payload_spec;
    if (filtered and p.flags.no_seccomp) fatal(.PERM, "this jail was made with the seccomp filter; its payload cannot turn it off");
    for (p.argv.slice(), 0..) |v, i| payload_argv[i] = v;
    payload_argv[p.argv.len] = null;
    for (p.env.slice(), 0..) |v, i| payload_envp[i] = v;
    payload_envp[p.env.len] = null;
    var flags = given.flags;
    flags.new_session = p.flags.new_session;
    flags.no_seccomp = p.flags.no_seccomp;
    return .{
        .uid = p.uid,
        .gid = p.gid,
        .caps = p.caps,
        .flags = flags,
        .npass = given.npass,
        .cwd = p.cwd.ptr,
        .argv = &payload_argv,
        .envp = &payload_envp,
    };
}

/// Reads exactly buf.len bytes; false on EOF or error.
fn readFull(fd: i32, buf: []u8) bool {
    var off: usize = 0;
    while (off < buf.len) {
        const n = linux.read(fd, buf[off..].ptr, buf.len - off);
        if (errno(n)) |e| {
            if (e == .INTR) continue;
            return false;
        }
        if (n == 0) return false;
        off += n;
    }
    return true;
}

fn parseArgs() ?Args {
    const argv = std.os.argv;
    if (argv.len < 9) return null;
    if (!std.mem.eql(u8, std.mem.span(argv[7]), "--")) return null;
    return .{
        .uid = std.fmt.parseInt(u32, std.mem.span(argv[1]), 10) catch return null,
        .gid = std.fmt.parseInt(u32, std.mem.span(argv[2]), 10) catch return null,
        .caps = std.fmt.parseInt(u64, std.mem.span(argv[3]), 16) catch return null,
        .flags = @bitCast(std.fmt.parseInt(u32, std.mem.span(argv[4]), 10) catch return null),
        .npass = std.fmt.parseInt(u32, std.mem.span(argv[5]), 10) catch return null,
        .cwd = argv[6],
        .argv = @ptrCast(argv.ptr + 8),
        .envp = @ptrCast(std.os.environ.ptr),
    };
}

fn report(status: u32) void {
    var buf: [32]u8 = undefined;
    const line = if (linux.W.IFSIGNALED(status))
        std.fmt.bufPrint(&buf, "{c} {d}\n", .{ abi.status_signal, linux.W.TERMSIG(status) })
    else
        std.fmt.bufPrint(&buf, "{c} {d}\n", .{ abi.status_exit, linux.W.EXITSTATUS(status) });
    const text = line catch return;
    trace.flush(status_fd, text);
}

fn fatalOn(fd: i32, e: linux.E, what: []const u8, detail: []const u8) noreturn {
    var buf: [600]u8 = undefined;
    const name = std.enums.tagName(linux.E, e) orelse "?";
    const line = std.fmt.bufPrint(&buf, "{c} {d} {s}{s}: E{s}\n", .{ abi.status_error, @intFromEnum(e), what, detail, name }) catch "E 5 keeper\n";
    trace.flush(fd, line);
    linux.exit_group(127);
}

fn fatal(e: linux.E, what: []const u8) noreturn {
    fatalOn(status_fd, e, what, "");
}

fn fatalFmt(e: linux.E, comptime fmt: []const u8, args: anytype) noreturn {
    var buf: [200]u8 = undefined;
    fatalOn(status_fd, e, std.fmt.bufPrint(&buf, fmt, args) catch "keeper", "");
}

var payload_stack: [64 * 1024]u8 align(16) = undefined;

fn payloadEntry(arg: usize) callconv(.c) u8 {
    const a: *const Args = @ptrFromInt(arg);
    payload(a.*);
}

/// In the payload's process (sharing the keeper's memory until it executes, so it writes
/// nothing but its own stack): descriptors, session, identity, capabilities, filter, exec.
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

    if (a.flags.new_session) _ = linux.setsid();

    if (caps_mod.dropBounding(a.caps)) |e| fatalOn(sfd, e, "drop capability bounding set", "");
    const groups = [_]u32{a.gid};
    if (errno(linux.setgroups(1, &groups))) |e| fatalOn(sfd, e, "setgroups", "");
    if (errno(linux.setresgid(a.gid, a.gid, a.gid))) |e| fatalOn(sfd, e, "setgid", "");
    if (a.caps != 0) _ = linux.prctl(@intFromEnum(linux.PR.SET_KEEPCAPS), 1, 0, 0, 0);
    if (errno(linux.setresuid(a.uid, a.uid, a.uid))) |e| fatalOn(sfd, e, "setuid", "");
    if (caps_mod.restrict(a.caps, a.caps)) |e| fatalOn(sfd, e, "set capabilities", "");
    if (errno(linux.prctl(@intFromEnum(linux.PR.SET_NO_NEW_PRIVS), 1, 0, 0, 0))) |e| fatalOn(sfd, e, "no_new_privs", "");

    if (errno(linux.chdir(a.cwd))) |e| fatalOn(sfd, e, "chdir ", std.mem.span(a.cwd));
    mark("payload identity");
    const e = sys.execvpe(a.argv, a.envp);
    fatalOn(sfd, e, "exec ", std.mem.span(a.argv[0].?));
}
