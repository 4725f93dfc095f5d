//! Where jails' cgroups live (Linux): the `lightjail` base directory under each v1
//! controller's hierarchy (memory, pids, cpu) or under the unified v2 hierarchy, found in
//! mountinfo, and made ready (created; on v2 the controllers enabled for the base's children).
//! The one owner of the layout: the native ljspawn calls it directly, the TypeScript side
//! through `lj_cgroup_layout` (src/jail/cgroup.ts).
const std = @import("std");
const linux = std.os.linux;

pub const base_name = "lightjail";

pub const Hierarchy = enum { unified, memory, pids, cpu };
const controllers = [_]Hierarchy{ .memory, .pids, .cpu };

const Path = struct {
    buf: [256]u8 = undefined,
    len: usize = 0,
};

pub const Layout = struct {
    /// 1 or 2; 0: no cgroups mounted.
    version: u8 = 0,
    paths: [4]Path = .{ .{}, .{}, .{}, .{} },
    /// Where a cgroup2 hierarchy is mounted (a v2 host's root, a hybrid host's unified one),
    /// and whether with `favordynmods` (src/jail/cgroup.ts `favorDynamicMoves`).
    v2_mount: Path = .{},
    favordynmods: bool = false,

    /// The base directory for `h`, or null when that hierarchy is not mounted.
    pub fn base(l: *const Layout, h: Hierarchy) ?[]const u8 {
        const p = &l.paths[@intFromEnum(h)];
        return if (p.len == 0) null else p.buf[0..p.len];
    }

    fn set(l: *Layout, h: Hierarchy, point: []const u8) void {
        const p = &l.paths[@intFromEnum(h)];
        const text = std.fmt.bufPrint(&p.buf, "{s}/{s}", .{ std.mem.trimRight(u8, point, "/"), base_name }) catch return;
        p.len = text.len;
    }

    /// "VERSION\nHIERARCHY DIR\n..." for the TypeScript side.
    pub fn write(l: *const Layout, w: *std.Io.Writer) !void {
        try w.print("{d}\n", .{l.version});
        for (std.enums.values(Hierarchy)) |h| if (l.base(h)) |b| try w.print("{s} {s}\n", .{ @tagName(h), b });
        if (l.v2_mount.len > 0) try w.print("cgroup2 {s}{s}\n", .{ l.v2_mount.buf[0..l.v2_mount.len], if (l.favordynmods) " favordynmods" else "" });
    }
};

/// The hierarchies in `mountinfo`; v1 controllers win over a hybrid host's unified one.
pub fn detect(mountinfo: []const u8) Layout {
    var l = Layout{};
    var unified: ?[]const u8 = null;
    var lines = std.mem.splitScalar(u8, mountinfo, '\n');
    while (lines.next()) |line| {
        const sep = std.mem.indexOf(u8, line, " - ") orelse continue;
        var left = std.mem.tokenizeScalar(u8, line[0..sep], ' ');
        var k: usize = 0;
        var point: []const u8 = "";
        while (left.next()) |f| : (k += 1) if (k == 4) {
            point = f;
        };
        var right = std.mem.tokenizeScalar(u8, line[sep + 3 ..], ' ');
        const fstype = right.next() orelse continue;
        _ = right.next();
        const opts = right.next() orelse "";
        if (std.mem.eql(u8, fstype, "cgroup2")) {
            if (unified == null) {
                unified = point;
                const n = @min(point.len, l.v2_mount.buf.len);
                @memcpy(l.v2_mount.buf[0..n], point[0..n]);
                l.v2_mount.len = n;
                var o = std.mem.splitScalar(u8, opts, ',');
                while (o.next()) |opt| if (std.mem.eql(u8, opt, "favordynmods")) {
                    l.favordynmods = true;
                };
            }
            continue;
        }
        if (!std.mem.eql(u8, fstype, "cgroup")) continue;
        var o = std.mem.splitScalar(u8, opts, ',');
        while (o.next()) |opt| for (controllers) |c| if (std.mem.eql(u8, opt, @tagName(c))) {
            l.set(c, point);
            l.version = 1;
        };
    }
    if (l.version == 0) if (unified) |u| {
        l.set(.unified, u);
        l.version = 2;
    };
    return l;
}

pub const Failure = struct { e: linux.E, what: []const u8, path: Path = .{} };

/// Creates the base directories and, on v2, enables memory, pids and cpu (those available)
/// in the base's parent and the base, so that each jail's cgroup under it can use them.
pub fn prepare(l: *const Layout) ?Failure {
    for (std.enums.values(Hierarchy)) |h| if (l.base(h)) |b| {
        std.fs.cwd().makePath(b) catch |e| return failure(if (e == error.AccessDenied) .ACCES else .IO, "create the cgroup base", b);
    };
    const unified = l.base(.unified) orelse return null;
    const parent = std.fs.path.dirname(unified) orelse return null;
    for ([_][]const u8{ parent, unified }) |dir| {
        if (enable(dir)) |f| return f;
    }
    return null;
}

fn enable(dir: []const u8) ?Failure {
    var pb: [300]u8 = undefined;
    var available_buf: [256]u8 = undefined;
    const cpath = std.fmt.bufPrint(&pb, "{s}/cgroup.controllers", .{dir}) catch return failure(.NAMETOOLONG, "read the controllers of", dir);
    const available = std.fs.cwd().readFile(cpath, &available_buf) catch return failure(.IO, "read the controllers of", dir);
    var want_buf: [64]u8 = undefined;
    var w = std.Io.Writer.fixed(&want_buf);
    for (controllers) |c| {
        var words = std.mem.tokenizeAny(u8, available, " \n");
        while (words.next()) |word| if (std.mem.eql(u8, word, @tagName(c))) {
            w.print("{s}+{s}", .{ if (w.end == 0) "" else " ", @tagName(c) }) catch {};
        };
    }
    if (w.end == 0) return null;
    const spath = std.fmt.bufPrint(&pb, "{s}/cgroup.subtree_control", .{dir}) catch return failure(.NAMETOOLONG, "enable the controllers in", dir);
    const f = std.fs.cwd().openFile(spath, .{ .mode = .write_only }) catch return failure(.ACCES, "enable the controllers in", dir);
    defer f.close();
    f.writeAll(w.buffered()) catch return failure(.BUSY, "enable the controllers in", dir);
    return null;
}

fn failure(e: linux.E, what: []const u8, path: []const u8) Failure {
    var f = Failure{ .e = e, .what = what };
    const n = @min(path.len, f.path.buf.len);
    @memcpy(f.path.buf[0..n], path[0..n]);
    f.path.len = n;
    return f;
}

const v1_info =
    \\25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
    \\26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
    \\30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
    \\31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
    \\32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
;

test "a hybrid host's v1 controllers win over its unified hierarchy" {
    const l = detect(v1_info);
    try std.testing.expectEqual(@as(u8, 1), l.version);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/memory/lightjail", l.base(.memory).?);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/cpu,cpuacct/lightjail", l.base(.cpu).?);
    try std.testing.expect(l.base(.unified) == null);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/unified", l.v2_mount.buf[0..l.v2_mount.len]);
    try std.testing.expect(!l.favordynmods);
}

test "a v2 host has one base; no cgroups, no layout" {
    const l = detect("29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
    try std.testing.expectEqual(@as(u8, 2), l.version);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/lightjail", l.base(.unified).?);
    var buf: [128]u8 = undefined;
    var w = std.Io.Writer.fixed(&buf);
    try l.write(&w);
    try std.testing.expectEqualStrings("2\nunified /sys/fs/cgroup/lightjail\ncgroup2 /sys/fs/cgroup\n", w.buffered());
    try std.testing.expectEqual(@as(u8, 0), detect("22 1 0:5 / /proc rw - proc proc rw\n").version);
}
