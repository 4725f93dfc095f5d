//! Small Linux syscall helpers shared by the shim, the keeper and the native ljspawn.
const std = @import("std");
const linux = std.os.linux;

/// __WALL: wait for children whatever their exit signal (clone children included).
pub const W_ALL: u32 = 0x40000000;
pub const F_DUPFD_CLOEXEC: i32 = 1030;

/// Where a command without a slash is looked for when its environment has no PATH (execvp's).
pub const default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// No core dump from a process that shares the owner's memory (it would hold Bun's): a soft
/// limit of 0, the hard one kept so a jail's own rlimits can still allow dumps.
pub fn noCoreDumps() void {
    var lim: [2]u64 = undefined;
    const core = @intFromEnum(linux.rlimit_resource.CORE);
    if (errno(linux.syscall4(.prlimit64, 0, core, 0, @intFromPtr(&lim))) != null) lim[1] = 0;
    lim[0] = 0;
    _ = linux.syscall4(.prlimit64, 0, core, @intFromPtr(&lim), 0);
}

/// The calling thread's CPU mask, kept to be given back.
pub const CpuMask = struct {
    set: linux.cpu_set_t = undefined,

    /// Saves the calling thread's mask and pins it to the CPU it runs on; false (and nothing
    /// changed) when any of that fails.
    pub fn pinHere(m: *CpuMask) bool {
        if (errno(linux.sched_getaffinity(0, @sizeOf(linux.cpu_set_t), &m.set)) != null) return false;
        var cpu: usize = 0;
        if (errno(linux.getcpu(&cpu, null)) != null) return false;
        var one = std.mem.zeroes(linux.cpu_set_t);
        const bits = @bitSizeOf(usize);
        if (cpu >= one.len * bits) return false;
        one[cpu / bits] |= @as(usize, 1) << @intCast(cpu % bits);
        return errno(setAffinity(&one)) == null;
    }

    /// Gives the calling thread the saved mask again.
    pub fn restore(m: *const CpuMask) usize {
        return setAffinity(&m.set);
    }

    fn setAffinity(set: *const linux.cpu_set_t) usize {
        return linux.syscall3(.sched_setaffinity, 0, @sizeOf(linux.cpu_set_t), @intFromPtr(set));
    }
};

pub fn monotonicNs() u64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
}

/// A traced jail's timeline: "T step nanoseconds" lines (CLOCK_MONOTONIC), gathered in memory
/// and written to the status pipe in one go when the process hands over (the child before it
/// executes the keeper, the keeper with its report), so tracing does not wake the owner at
/// every step and the steps measure what untraced jails do.
pub const Trace = struct {
    on: bool = false,
    buf: [1536]u8 = undefined,
    len: usize = 0,

    pub fn markAt(t: *Trace, step: []const u8, ns: u64) void {
        if (!t.on) return;
        const line = std.fmt.bufPrint(t.buf[t.len..], "T {s} {d}\n", .{ step, ns }) catch return;
        t.len += line.len;
    }

    pub fn mark(t: *Trace, step: []const u8) void {
        if (t.on) t.markAt(step, monotonicNs());
    }

    /// Writes the marks so far followed by `tail` (a status line, or nothing) in one write.
    pub fn flush(t: *Trace, fd: i32, tail: []const u8) void {
        const room = t.buf.len - t.len;
        if (tail.len <= room) {
            @memcpy(t.buf[t.len..][0..tail.len], tail);
            _ = linux.write(fd, &t.buf, t.len + tail.len);
        } else {
            _ = linux.write(fd, &t.buf, t.len);
            _ = linux.write(fd, tail.ptr, tail.len);
        }
        t.len = 0;
    }
};

/// Brings the loopback interface of the caller's network namespace up. On failure: the errno
/// and the step that failed.
pub fn loopbackUp() ?struct { e: linux.E, step: []const u8 } {
    const rc = linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (errno(rc)) |e| return .{ .e = e, .step = "socket for loopback" };
    const fd: i32 = @intCast(rc);
    defer _ = linux.close(fd);
    var req = std.mem.zeroes(linux.ifreq);
    @memcpy(req.ifrn.name[0..2], "lo");
    if (errno(linux.ioctl(fd, linux.SIOCGIFFLAGS, @intFromPtr(&req)))) |e| return .{ .e = e, .step = "get loopback flags" };
    req.ifru.flags.UP = true;
    req.ifru.flags.RUNNING = true;
    if (errno(linux.ioctl(fd, linux.SIOCSIFFLAGS, @intFromPtr(&req)))) |e| return .{ .e = e, .step = "bring loopback up" };
    return null;
}

/// execve, searching PATH (from `envp`, else default_path) for names without a slash.
pub fn execvpe(argv: [*:null]const ?[*:0]const u8, envp: [*:null]const ?[*:0]const u8) linux.E {
    const file = std.mem.span(argv[0].?);
    if (file.len == 0) return .NOENT;
    if (std.mem.indexOfScalar(u8, file, '/') != null) return errno(linux.execve(argv[0].?, argv, envp)) orelse .NOEXEC;

    var search: []const u8 = default_path;
    var i: usize = 0;
    while (envp[i]) |kv| : (i += 1) {
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

/// Whether the process `pidfd` refers to has ended (its pidfd polls readable).
pub fn pidfdEnded(pidfd: i32) bool {
    if (pidfd < 0) return false;
    var p = [1]linux.pollfd{.{ .fd = pidfd, .events = linux.POLL.IN, .revents = 0 }};
    const rc = linux.poll(&p, 1, 0);
    return errno(rc) == null and rc > 0 and p[0].revents & linux.POLL.IN != 0;
}

/// The errno of a raw syscall return value, or null on success.
pub fn errno(rc: usize) ?linux.E {
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}

// The new mount API (open_tree, mount_setattr, move_mount): its flags, and mount_setattr's
// argument, shared by the jail's setup (linux.zig) and the owner's idmapped copies (idmap.zig).
pub const OPEN_TREE_CLONE: usize = 1;
pub const O_CLOEXEC: usize = 0o2000000;
pub const AT_EMPTY_PATH: usize = 0x1000;
pub const AT_RECURSIVE: usize = 0x8000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x100000;
pub const MountAttr = extern struct { attr_set: u64 = 0, attr_clr: u64 = 0, propagation: u64 = 0, userns_fd: u64 = 0 };

/// A detached copy of what `dirfd` and `path` name (`path` empty: `dirfd` itself), with its
/// submounts when `recursive`, given `attr` as a whole (mount_setattr; nothing to set: as it
/// is). Returns its descriptor, or the failing call's result (the copy then closed).
pub fn detachedCopy(dirfd: i32, path: [*:0]const u8, recursive: bool, attr: MountAttr) usize {
    const empty: usize = if (path[0] == 0) AT_EMPTY_PATH else 0;
    const rec: usize = if (recursive) AT_RECURSIVE else 0;
    const tree = linux.syscall3(.open_tree, @bitCast(@as(isize, dirfd)), @intFromPtr(path), OPEN_TREE_CLONE | O_CLOEXEC | empty | rec);
    if (errno(tree) != null or attr.attr_set == 0) return tree;
    const rc = linux.syscall5(.mount_setattr, tree, @intFromPtr(""), AT_EMPTY_PATH | rec, @intFromPtr(&attr), @sizeOf(MountAttr));
    if (errno(rc) != null) {
        _ = linux.close(@intCast(tree));
        return rc;
    }
    return tree;
}
