//! Idmapped layers for user-namespaced jails (Linux). The world and overlays belong to the
//! host's root, which a jail's user namespace does not map: inside they would show as nobody,
//! and overlayfs could not copy a root-owned file up (it cannot give the copy an owner the
//! namespace does not know). So the jail sees them through idmapped mounts that show the host's
//! ids 0..count-1 as host ids base.., which its namespace maps back to 0..count-1: inside, root's
//! files are root's. The layers themselves never change; what root inside writes goes to the
//! upper layer, owned by base+id on the host.
//!
//! Making an idmapped mount needs privilege over the source mount in the initial user
//! namespace, which the jail's child (already in its own user namespace) lacks. So the owner
//! makes them, before the clone: detached copies of the layers (open_tree) given the jail's
//! id mapping (mount_setattr with a user namespace that has it). The child inherits them with
//! its copy of the descriptor table and attaches them in its own mount namespace (a detached
//! mount of the owner's cannot be a layer directly: overlayfs wants privilege over the mount
//! namespace a layer belongs to). Nothing here runs in the jail's child.
const std = @import("std");
const linux = std.os.linux;
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const sys = @import("sys.zig");

const Spec = spec_mod.Spec;
const errno = sys.errno;

/// A user namespace's id mapping: inside ids 0..count-1 are host ids base..
pub const Mapping = struct {
    uid_base: u32,
    gid_base: u32,
    count: u32,

    pub fn of(s: *const Spec) Mapping {
        return .{ .uid_base = s.host_uid_base, .gid_base = s.host_gid_base, .count = s.id_count };
    }

    /// The line written to a uid_map or gid_map.
    pub fn line(m: Mapping, buf: []u8, base: u32) []const u8 {
        return std.fmt.bufPrint(buf, "0 {d} {d}\n", .{ base, m.count }) catch unreachable;
    }
};

/// Whether the jail's overlay layers are seen idmapped: every user-namespaced jail built from
/// layers (a `-d` root is bound as it is).
pub fn wantsLowers(s: *const Spec) bool {
    return s.flags.userns and s.root_dir == null and s.lowers.len > 0;
}

/// Whether a bind mount is made idmapped: read-only ones that ask for it, in a user namespace.
/// (A writable one never: writes through it would land as the host's own ids.)
pub fn wantsMount(s: *const Spec, m: spec_mod.Mount) bool {
    return s.flags.userns and m.flags.idmap and m.flags.readonly;
}

pub fn wantsAny(s: *const Spec) bool {
    if (wantsLowers(s)) return true;
    for (s.mounts.slice()) |m| if (wantsMount(s, m)) return true;
    return false;
}

/// The detached idmapped copies made for one jail, by position in the spec; -1 where none.
pub const Trees = struct {
    lowers: [spec_mod.max_lowers]i32 = @splat(-1),
    mounts: [spec_mod.max_mounts]i32 = @splat(-1),

    pub fn close(t: *Trees) void {
        for (&t.lowers) |*fd| closeFd(fd);
        for (&t.mounts) |*fd| closeFd(fd);
    }
};

fn closeFd(fd: *i32) void {
    if (fd.* >= 0) _ = linux.close(fd.*);
    fd.* = -1;
}

/// The errno of the last failure of `make` on this thread (its text is in the caller's buffer).
pub threadlocal var last_errno: u16 = 0;

const requirement = "idmapped mounts need Linux 5.12+ and a filesystem that supports them (ext4, xfs, btrfs, tmpfs 6.3+)";

/// Makes the idmapped copies `s` needs into `out` (all or none). Called by the owner.
pub fn make(s: *const Spec, out: *Trees, err: errtext.CBuf) error{Failed}!void {
    if (!wantsAny(s)) return;
    lock.lock();
    defer lock.unlock();
    const ns = try usernsFor(Mapping.of(s), err);
    errdefer out.close();
    if (wantsLowers(s)) for (s.lowers.slice(), 0..) |l, i| {
        const rc = idmappedTree(l, false, MOUNT_ATTR_RDONLY, ns);
        if (errno(rc)) |e| return fail(err, e, "make an idmapped copy of layer {s} for the user namespace ({s})", .{ l, requirement });
        out.lowers[i] = @intCast(rc);
    };
    for (s.mounts.slice(), 0..) |m, i| if (wantsMount(s, m)) {
        // With its submounts, read-only as a whole, like any read-only bind.
        const rc = idmappedTree(m.src, true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, ns);
        if (errno(rc)) |e| return fail(err, e, "make an idmapped copy of {s} for the user namespace ({s})", .{ m.src, requirement });
        out.mounts[i] = @intCast(rc);
    };
}

fn fail(err: errtext.CBuf, e: linux.E, comptime fmt: []const u8, args: anytype) error{Failed} {
    _ = err.set(@intFromEnum(e), fmt, args);
    last_errno = @intFromEnum(e);
    return error.Failed;
}

const MOUNT_ATTR_RDONLY = sys.MOUNT_ATTR_RDONLY;
const MOUNT_ATTR_NOSUID = sys.MOUNT_ATTR_NOSUID;
const MOUNT_ATTR_NODEV = sys.MOUNT_ATTR_NODEV;

/// A detached copy of `path` (with its submounts when `recursive`), given `attr` and the id
/// mapping of the user namespace `ns`. Returns its descriptor or the failing call's result.
fn idmappedTree(path: [*:0]const u8, recursive: bool, attr: u64, ns: i32) usize {
    return sys.detachedCopy(linux.AT.FDCWD, path, recursive, .{ .attr_set = attr | sys.MOUNT_ATTR_IDMAP, .userns_fd = @intCast(ns) });
}

// ---------------------------------------------------------------------------------------
// User namespaces carrying a mapping, kept per mapping (a jail's range is usually its app's,
// and the same for each of its builds).

var lock: std.Thread.Mutex = .{};
var cache: Cache = .{};

pub const Cache = struct {
    const size = 8;
    keys: [size]Mapping = undefined,
    fds: [size]i32 = @splat(-1),
    next: usize = 0,

    pub fn find(c: *const Cache, m: Mapping) ?i32 {
        for (c.fds, 0..) |fd, i| if (fd >= 0 and std.meta.eql(c.keys[i], m)) return fd;
        return null;
    }

    /// Keeps `fd` for `m`, in place of the oldest entry when full; returns the descriptor
    /// that entry held (the caller closes it), or -1.
    pub fn put(c: *Cache, m: Mapping, fd: i32) i32 {
        const i = c.next;
        const old = c.fds[i];
        c.keys[i] = m;
        c.fds[i] = fd;
        c.next = (i + 1) % size;
        return old;
    }
};

fn usernsFor(m: Mapping, err: errtext.CBuf) error{Failed}!i32 {
    if (cache.find(m)) |fd| return fd;
    const fd = try newUserns(m, err);
    const old = cache.put(m, fd);
    if (old >= 0) _ = linux.close(old);
    return fd;
}

/// A user namespace is made by a process: a short-lived child sharing our memory (like the
/// jails' children, so nothing of Bun is copied) is cloned into a new one and waits there while
/// its maps are written and the namespace is opened; then it is killed and reaped. Its exit
/// signal is none, so Bun never hears of it.
var helper_stack: [8 * 1024]u8 align(16) = undefined;

fn helperEntry(arg: usize) callconv(.c) u8 {
    const word: *u32 = @ptrFromInt(arg);
    while (true) _ = linux.futex(word, .{ .cmd = .WAIT, .private = true }, 0, .{ .timeout = null }, null, 0);
}

fn newUserns(m: Mapping, err: errtext.CBuf) error{Failed}!i32 {
    var word: u32 = 0;
    // No handler of Bun's may run on the helper's stack: it runs with every signal blocked.
    const all = linux.sigfillset();
    var old: linux.sigset_t = undefined;
    _ = linux.sigprocmask(linux.SIG.SETMASK, &all, &old);
    const rc = linux.clone(helperEntry, @intFromPtr(&helper_stack) + helper_stack.len, linux.CLONE.VM | linux.CLONE.NEWUSER, @intFromPtr(&word), null, 0, null);
    _ = linux.sigprocmask(linux.SIG.SETMASK, &old, null);
    if (errno(rc)) |e| return fail(err, e, "create a user namespace for idmapped layers", .{});
    const pid: i32 = @intCast(rc);
    defer {
        _ = linux.kill(pid, linux.SIG.KILL);
        var st: u32 = 0;
        while (errno(linux.wait4(pid, &st, sys.W_ALL, null)) == .INTR) {}
    }
    var path: [64]u8 = undefined;
    var text: [64]u8 = undefined;
    const maps = [_]struct { name: []const u8, base: u32 }{ .{ .name = "uid_map", .base = m.uid_base }, .{ .name = "gid_map", .base = m.gid_base } };
    for (maps) |f| {
        const p = std.fmt.bufPrintZ(&path, "/proc/{d}/{s}", .{ pid, f.name }) catch unreachable;
        const l = m.line(&text, f.base);
        const fd = linux.open(p.ptr, .{ .ACCMODE = .WRONLY, .CLOEXEC = true }, 0);
        if (errno(fd)) |e| return fail(err, e, "open {s} for the idmapped layers' user namespace", .{p});
        const w = linux.write(@intCast(fd), l.ptr, l.len);
        _ = linux.close(@intCast(fd));
        if (errno(w)) |e| return fail(err, e, "write {s} for the idmapped layers' user namespace", .{p});
    }
    const p = std.fmt.bufPrintZ(&path, "/proc/{d}/ns/user", .{pid}) catch unreachable;
    const fd = linux.open(p.ptr, .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0);
    if (errno(fd)) |e| return fail(err, e, "open {s}", .{p});
    return @intCast(fd);
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

test "a mapping's map line" {
    var buf: [64]u8 = undefined;
    const m = Mapping{ .uid_base = 300000, .gid_base = 400000, .count = 65536 };
    try testing.expectEqualStrings("0 300000 65536\n", m.line(&buf, m.uid_base));
    try testing.expectEqualStrings("0 400000 65536\n", m.line(&buf, m.gid_base));
}

test "the cache finds a mapping and hands back the oldest when full" {
    var c = Cache{};
    const a = Mapping{ .uid_base = 1, .gid_base = 1, .count = 10 };
    try testing.expectEqual(@as(?i32, null), c.find(a));
    try testing.expectEqual(@as(i32, -1), c.put(a, 100));
    try testing.expectEqual(@as(?i32, 100), c.find(a));
    // Same uid base, other gid base: another namespace.
    try testing.expectEqual(@as(?i32, null), c.find(.{ .uid_base = 1, .gid_base = 2, .count = 10 }));
    for (1..Cache.size) |i| try testing.expectEqual(@as(i32, -1), c.put(.{ .uid_base = @intCast(i + 1), .gid_base = 0, .count = 1 }, @intCast(100 + i)));
    try testing.expectEqual(@as(i32, 100), c.put(.{ .uid_base = 99, .gid_base = 0, .count = 1 }, 200));
    try testing.expectEqual(@as(?i32, null), c.find(a));
    try testing.expectEqual(@as(?i32, 200), c.find(.{ .uid_base = 99, .gid_base = 0, .count = 1 }));
}

test "what is idmapped: a user namespace's layers and the read-only binds that ask" {
    var s = Spec{};
    try s.lowers.append("/w");
    try s.mounts.append(.{ .flags = .{ .readonly = true, .idmap = true }, .src = "/usr", .dst = "/usr" });
    try s.mounts.append(.{ .flags = .{ .readonly = true }, .src = "/k", .dst = "/k" });
    try s.mounts.append(.{ .flags = .{ .idmap = true }, .src = "/rw", .dst = "/rw" });
    try testing.expect(!wantsAny(&s)); // no user namespace: ids show as they are anyway
    s.flags.userns = true;
    try testing.expect(wantsLowers(&s));
    const m = s.mounts.slice();
    try testing.expect(wantsMount(&s, m[0]));
    try testing.expect(!wantsMount(&s, m[1]));
    try testing.expect(!wantsMount(&s, m[2]));
    s.root_dir = "/seed"; // a -d root has no layers
    try testing.expect(!wantsLowers(&s));
    try testing.expect(wantsAny(&s));
}
