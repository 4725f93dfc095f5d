//! A Linux jail's cgroups, from inside its child: create them, write the limits, move the jail
//! in (or only join sets made ahead), in parallel with the root's assembly (the placer).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const idmap = @import("idmap.zig");
const Spec = spec_mod.Spec;
const child_mod = @import("linux_child.zig");
const Child = child_mod.Child;
const path_max = child_mod.path_max;

/// Why a cgroup step failed: the errno, what was being done, and the file.
pub const CgFailure = struct {
    e: linux.E = .SUCCESS,
    what: []const u8 = "",
    buf: [path_max]u8 = undefined,
    len: usize = 0,
    pub fn path(f: *const CgFailure) []const u8 {
        return f.buf[0..f.len];
    }
};

/// One file of cgroup-limits.txt, the table the owner's side (src/jail/cgroup.ts) reads too.
const LimitFile = struct {
    kind: spec_mod.CgroupKind,
    limit: enum { memory, pids, cpu },
    file: []const u8,
    value: []const u8,
    required: bool,

    /// The value for this jail, or null when it has no such limit.
    fn render(l: *const LimitFile, s: *const Spec, buf: []u8) ?[]const u8 {
        const n: u64 = switch (l.limit) {
            .memory => s.memory_bytes_max,
            .pids => s.pids_max,
            .cpu => s.cpu_millis,
        };
        if (n == 0) return null;
        var w = std.Io.Writer.fixed(buf);
        var words = std.mem.splitScalar(u8, l.value, '_');
        var first = true;
        while (words.next()) |word| {
            if (!first) w.writeByte(' ') catch return null;
            first = false;
            if (std.mem.eql(u8, word, "BYTES")) w.print("{d}", .{s.memory_bytes_max}) catch return null else if (std.mem.eql(u8, word, "PIDS")) w.print("{d}", .{s.pids_max}) catch return null else if (std.mem.eql(u8, word, "QUOTA")) w.print("{d}", .{s.cpu_millis * 100}) catch return null else w.writeAll(word) catch return null;
        }
        return w.buffered();
    }
};

const limit_files: []const LimitFile = blk: {
    const table = @import("table.zig").rows(@embedFile("cgroup-limits.txt"), 5);
    var out: [table.len]LimitFile = undefined;
    for (table, &out) |row, *l| l.* = .{
        .kind = std.meta.stringToEnum(spec_mod.CgroupKind, row[0]) orelse @compileError("cgroup-limits.txt: kind " ++ row[0]),
        .limit = std.meta.stringToEnum(@FieldType(LimitFile, "limit"), row[1]) orelse @compileError("cgroup-limits.txt: limit " ++ row[1]),
        .file = row[2],
        .value = row[3],
        .required = std.mem.eql(u8, row[4], "yes"),
    };
    const final = out;
    break :blk &final;
};

/// Creates the jail's cgroups, writes its limits and moves the process `procs` names into them
/// (a pid as the writer's pid namespace sees it). Cgroups made ahead of time are only joined.
pub fn setupCgroups(s: *const Spec, procs: []const u8, f: *CgFailure) bool {
    for (s.cgroups.slice()) |cg| {
        if (cg.kind == .join) {
            if (!writeCg(cg.dir, "cgroup.procs", procs, true, f)) return false;
            continue;
        }
        const rc = linux.mkdir(cg.dir.ptr, 0o755);
        if (errno(rc)) |e| if (e != .EXIST) {
            f.e = e;
            f.what = "create cgroup";
            f.len = (std.fmt.bufPrint(&f.buf, "{s}", .{cg.dir}) catch "").len;
            return false;
        };
        for (limit_files) |l| {
            if (l.kind != cg.kind) continue;
            var v: [48]u8 = undefined;
            const value = l.render(s, &v) orelse continue;
            if (!writeCg(cg.dir, l.file, value, l.required, f)) return false;
        }
        if (!writeCg(cg.dir, "cgroup.procs", procs, true, f)) return false;
    }
    return true;
}

fn writeCg(dir: [:0]const u8, file: []const u8, value: []const u8, required: bool, f: *CgFailure) bool {
    const path = std.fmt.bufPrintZ(&f.buf, "{s}/{s}", .{ dir, file }) catch {
        f.e = .NAMETOOLONG;
        f.what = "cgroup path";
        return false;
    };
    f.len = path.len;
    const rc = linux.open(path.ptr, .{ .ACCMODE = .WRONLY, .CLOEXEC = true }, 0);
    if (errno(rc)) |e| {
        if (!required and (e == .NOENT or e == .ACCES)) return true;
        f.e = e;
        f.what = "open";
        return false;
    }
    const fd: i32 = @intCast(rc);
    const w = linux.write(fd, value.ptr, value.len);
    _ = linux.close(fd);
    if (errno(w)) |e| {
        if (!required) return true;
        f.e = e;
        f.what = "write to";
        return false;
    }
    return true;
}

// The placer: moving a process into a cgroup v1 hierarchy waits for an RCU grace period
// (about a millisecond here). The jail's child starts a placer (a thread-like child sharing its
// memory) that creates the cgroups, writes the limits and moves the jail in, while the jail
// builds its root; the jail waits for it only before it lets the payload run.

pub const Placer = struct {
    /// Cleared by the kernel when the placer exits (CLONE_CHILD_CLEARTID).
    ctid: i32 align(4) = 0,
    failure: CgFailure = .{},
    ok: bool = false,
    spec: *const Spec,
    stack: [16 * 1024]u8 align(16) = undefined,
};

/// The placer inherits the child's core limit of 0 (set before it is started).
fn placerEntry(arg: usize) callconv(.c) u8 {
    const p: *Placer = @ptrFromInt(arg);
    // "1": the jail's first process, as seen from inside its pid namespace (where we are).
    p.ok = setupCgroups(p.spec, "1", &p.failure);
    return 0;
}

pub fn onlyJoins(s: *const Spec) bool {
    for (s.cgroups.slice()) |cg| if (cg.kind != .join) return false;
    return true;
}

pub fn startPlacer(c: *const Child, p: *Placer) void {
    p.ctid = 1;
    // No exit signal: the keeper, pid 1 once we execute it, reaps the placer like any orphan.
    // Its own descriptor table: the jail rearranges its descriptors meanwhile.
    const flags: u32 = linux.CLONE.VM | linux.CLONE.CHILD_CLEARTID;
    const rc = linux.clone(placerEntry, @intFromPtr(&p.stack) + p.stack.len, flags, @intFromPtr(p), null, 0, &p.ctid);
    if (errno(rc)) |e| c.die(e, "start the cgroup placer", .{});
}

pub fn awaitPlacer(c: *const Child, p: *Placer) void {
    while (@atomicLoad(i32, &p.ctid, .acquire) != 0) {
        _ = linux.futex(&p.ctid, .{ .cmd = .WAIT, .private = false }, @bitCast(@atomicLoad(i32, &p.ctid, .acquire)), .{ .timeout = null }, null, 0);
    }
    if (!p.ok) c.die(p.failure.e, "{s} {s}", .{ p.failure.what, p.failure.path() });
}

test "the limit files a jail's cgroups get, from cgroup-limits.txt" {
    var s = Spec{};
    s.memory_bytes_max = 64 << 20;
    s.pids_max = 8;
    s.cpu_millis = 500;
    var got: [16][2][]const u8 = undefined;
    var bufs: [16][48]u8 = undefined;
    var n: usize = 0;
    for (limit_files) |*l| {
        if (l.kind != .unified and l.kind != .cpu) continue;
        const v = l.render(&s, &bufs[n]) orelse continue;
        got[n] = .{ l.file, v };
        n += 1;
    }
    const want = [_][2][]const u8{
        .{ "memory.max", "67108864" },    .{ "memory.swap.max", "0" },    .{ "memory.oom.group", "1" },
        .{ "pids.max", "8" },             .{ "cpu.max", "50000 100000" }, .{ "cpu.cfs_period_us", "100000" },
        .{ "cpu.cfs_quota_us", "50000" },
    };
    try std.testing.expectEqual(want.len, n);
    for (want, got[0..n]) |w, g| {
        try std.testing.expectEqualStrings(w[0], g[0]);
        try std.testing.expectEqualStrings(w[1], g[1]);
    }
    // No limit, no file.
    const none = Spec{};
    var buf: [48]u8 = undefined;
    for (limit_files) |*l| try std.testing.expect(l.render(&none, &buf) == null);
}
