//! The shared tables (spawn-flags.txt, cgroup-limits.txt, endings.txt, oom-evidence.txt) that
//! the TypeScript side reads too (src/jail/table.ts): one row a line, columns separated by
//! spaces, `#` lines are comments; in a table of words the last column is the rest of the line.
//! Parsed at compile time.
const std = @import("std");

/// The rows of `text`, each with exactly `columns` columns (a compile error otherwise).
pub fn rows(comptime text: []const u8, comptime columns: usize) []const [columns][]const u8 {
    return parse(text, columns, false);
}

/// The rows of `text`, whose last column is the rest of the line (words with spaces).
pub fn rowsWithWords(comptime text: []const u8, comptime columns: usize) []const [columns][]const u8 {
    return parse(text, columns, true);
}

fn parse(comptime text: []const u8, comptime columns: usize, comptime words: bool) []const [columns][]const u8 {
    comptime {
        @setEvalBranchQuota(200_000);
        var count = 0;
        var lines = std.mem.tokenizeScalar(u8, text, '\n');
        while (lines.next()) |l| {
            if (l[0] != '#') count += 1;
        }
        var out: [count][columns][]const u8 = undefined;
        var n = 0;
        lines.reset();
        while (lines.next()) |l| {
            if (l[0] == '#') continue;
            var fields = std.mem.tokenizeAny(u8, l, " \t");
            for (out[n][0 .. columns - 1]) |*c| c.* = fields.next() orelse @compileError("too few columns: " ++ l);
            if (words) {
                const rest = std.mem.trim(u8, fields.rest(), " \t");
                if (rest.len == 0) @compileError("no words: " ++ l);
                out[n][columns - 1] = rest;
            } else {
                out[n][columns - 1] = fields.next() orelse @compileError("too few columns: " ++ l);
                if (fields.next() != null) @compileError("too many columns: " ++ l);
            }
            n += 1;
        }
        const table = out;
        return &table;
    }
}

test "rows skip comments and keep the columns in order" {
    const r = comptime rows("# a comment\n-d  DIR  both\n--json -   ts\n", 3);
    try std.testing.expectEqual(@as(usize, 2), r.len);
    try std.testing.expectEqualStrings("-d", r[0][0]);
    try std.testing.expectEqualStrings("ts", r[1][2]);
}

test "a table of words keeps the rest of the line as its last column" {
    const r = comptime rowsWithWords("# words\nexit   exited with status {STATUS}\n", 2);
    try std.testing.expectEqualStrings("exit", r[0][0]);
    try std.testing.expectEqualStrings("exited with status {STATUS}", r[0][1]);
}
