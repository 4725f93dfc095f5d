//! How a jail ended, for the native ljspawn: the words of endings.txt and the evidence of an
//! OOM kill in oom-evidence.txt, the tables the TypeScript side tells from too
//! (src/jail/ended.ts, src/jail/cgroup-usage.ts).
const std = @import("std");
const table = @import("table.zig");
const spec_mod = @import("spec.zig");

const endings = table.rowsWithWords(@embedFile("endings.txt"), 2);

pub const Reason = enum { exit, signal, oom, timeout, setup };

/// The values a line's {NAME}s are filled with.
pub const Fill = struct {
    status: u32 = 0,
    signal: u32 = 0,
    limit: []const u8 = "",
    err: []const u8 = "",
};

fn wordsOf(key: []const u8) ?[]const u8 {
    for (endings) |row| if (std.mem.eql(u8, row[0], key)) return row[1];
    return null;
}

pub fn writeSignalName(w: *std.Io.Writer, sig: u32) !void {
    var buf: [12]u8 = undefined;
    const key = std.fmt.bufPrint(&buf, "{d}", .{sig}) catch unreachable;
    if (wordsOf(key)) |name| return w.writeAll(name);
    try w.print("signal {d}", .{sig});
}

/// Writes the line `key` names with its {NAME}s filled in.
fn writeWords(w: *std.Io.Writer, key: []const u8, fill: Fill) !void {
    var rest = wordsOf(key) orelse unreachable;
    while (std.mem.indexOfScalar(u8, rest, '{')) |open| {
        const close = std.mem.indexOfScalarPos(u8, rest, open, '}') orelse break;
        try w.writeAll(rest[0..open]);
        const name = rest[open + 1 .. close];
        if (std.mem.eql(u8, name, "STATUS")) try w.print("{d}", .{fill.status}) else if (std.mem.eql(u8, name, "SIGNAL")) try writeSignalName(w, fill.signal) else if (std.mem.eql(u8, name, "LIMIT")) try w.writeAll(fill.limit) else if (std.mem.eql(u8, name, "ERROR")) try w.writeAll(fill.err) else try w.writeAll(rest[open .. close + 1]);
        rest = rest[close + 1 ..];
    }
    try w.writeAll(rest);
}

/// How the jail ended, as src/jail/ended.ts `describeEnd` words it; `fill.limit` empty when
/// the limit is not known.
pub fn describe(w: *std.Io.Writer, reason: Reason, fill: Fill) !void {
    const known = fill.limit.len > 0;
    const key = switch (reason) {
        .exit => "exit",
        .signal => "signal",
        .oom => if (known) "oom-limit" else "oom",
        .timeout => if (known) "timeout-limit" else "timeout",
        .setup => "setup",
    };
    try writeWords(w, key, fill);
}

/// The line `lj spawn` leaves after its jail (src/jail/ended.ts `spawnEndLine`): none for an
/// exit, nor for SIGINT and SIGPIPE, whose end the caller already knows. False: no line.
pub fn writeSpawnEndLine(w: *std.Io.Writer, reason: Reason, fill: Fill) !bool {
    switch (reason) {
        .exit, .setup => return false,
        .signal => if (fill.signal == 2 or fill.signal == 13) return false,
        else => {},
    }
    try w.writeAll("the jail ");
    try describe(w, reason, fill);
    return true;
}

const Evidence = struct { kind: spec_mod.CgroupKind, file: []const u8, counter: ?[]const u8, only_after_sigkill: bool };

const evidence: []const Evidence = blk: {
    const rows = table.rows(@embedFile("oom-evidence.txt"), 4);
    var out: [rows.len]Evidence = undefined;
    for (rows, &out) |row, *e| e.* = .{
        .kind = std.meta.stringToEnum(spec_mod.CgroupKind, row[0]) orelse @compileError("oom-evidence.txt: kind " ++ row[0]),
        .file = row[1],
        .counter = if (std.mem.eql(u8, row[2], "-")) null else row[2],
        .only_after_sigkill = if (std.mem.eql(u8, row[3], "sigkill")) true else if (std.mem.eql(u8, row[3], "always")) false else @compileError("oom-evidence.txt: when " ++ row[3]),
    };
    const final = out;
    break :blk &final;
};

/// The number on `text`'s line `name N`, or 0.
fn counter(text: []const u8, name: []const u8) u64 {
    var lines = std.mem.splitScalar(u8, text, '\n');
    while (lines.next()) |line| {
        if (line.len > name.len and std.mem.startsWith(u8, line, name) and line[name.len] == ' ') {
            return std.fmt.parseInt(u64, std.mem.trim(u8, line[name.len + 1 ..], " "), 10) catch 0;
        }
    }
    return 0;
}

/// True when a cgroup of `kind` with these file contents shows an OOM kill; `read` gives a
/// file's text (null when it cannot be read).
pub fn oomShown(kind: spec_mod.CgroupKind, died_by_sigkill: bool, ctx: anytype, read: fn (@TypeOf(ctx), []const u8) ?[]const u8) bool {
    for (evidence) |e| {
        if (e.kind != kind or (e.only_after_sigkill and !died_by_sigkill)) continue;
        const text = read(ctx, e.file) orelse continue;
        const n = if (e.counter) |c| counter(text, c) else std.fmt.parseInt(u64, std.mem.trim(u8, text, " \n"), 10) catch 0;
        if (n > 0) return true;
    }
    return false;
}

fn lineFor(reason: Reason, fill: Fill) ![]const u8 {
    const S = struct {
        var buf: [256]u8 = undefined;
    };
    var w = std.Io.Writer.fixed(&S.buf);
    if (!try writeSpawnEndLine(&w, reason, fill)) return "";
    return w.buffered();
}

test "the words of endings.txt, filled in" {
    try std.testing.expectEqualStrings("the jail ran out of memory (limit 48 MB)", try lineFor(.oom, .{ .signal = 9, .limit = "48 MB" }));
    try std.testing.expectEqualStrings("the jail timed out after 0.5 s", try lineFor(.timeout, .{ .signal = 9, .limit = "0.5 s" }));
    try std.testing.expectEqualStrings("the jail was killed by SIGTERM", try lineFor(.signal, .{ .signal = 15 }));
    try std.testing.expectEqualStrings("the jail was killed by signal 31", try lineFor(.signal, .{ .signal = 31 }));
    try std.testing.expectEqualStrings("", try lineFor(.signal, .{ .signal = 13 }));
    try std.testing.expectEqualStrings("", try lineFor(.exit, .{ .status = 3 }));
}

test "the evidence of oom-evidence.txt" {
    const Files = struct {
        events: ?[]const u8 = null,
        failcnt: ?[]const u8 = null,
        fn read(f: @This(), file: []const u8) ?[]const u8 {
            if (std.mem.eql(u8, file, "memory.events")) return f.events;
            if (std.mem.eql(u8, file, "memory.failcnt")) return f.failcnt;
            return null;
        }
    };
    try std.testing.expect(oomShown(.unified, false, Files{ .events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n" }, Files.read));
    try std.testing.expect(!oomShown(.unified, false, Files{ .events = "low 0\nmax 3\noom 1\noom_kill 0\n" }, Files.read));
    try std.testing.expect(oomShown(.unified, true, Files{ .events = "oom 1\noom_kill 0\n" }, Files.read));
    try std.testing.expect(oomShown(.memory, true, Files{ .failcnt = "12\n" }, Files.read));
    try std.testing.expect(!oomShown(.memory, false, Files{ .failcnt = "12\n" }, Files.read));
    try std.testing.expect(!oomShown(.pids, true, Files{ .failcnt = "12\n" }, Files.read));
}
