//! Where a hidden host path (lightjail's state root) would show inside a jail. A jail's tree is
//! made of host directories placed at jail paths: each lower layer and a `-d` root at `/`, each
//! bind mount at its target. A hidden path below one of those sources appears at the matching
//! place below its jail path, and there the jail's setup mounts an empty read-only filesystem
//! over it (linux.zig, `hideState`). A host world binds the host's /usr, so a state root under
//! /usr/local would otherwise be open to every jail. Pure logic, tested here.
const std = @import("std");

/// The part of `path` below `dir` ("" when they are the same), or null when `path` is not
/// `dir` or below it. Both are absolute; a trailing slash on `dir` is ignored.
pub fn below(dir: []const u8, path: []const u8) ?[]const u8 {
    const d = std.mem.trimRight(u8, dir, "/");
    if (!std.mem.startsWith(u8, path, d)) return null;
    const rest = path[d.len..];
    if (rest.len == 0) return "";
    if (rest[0] != '/') return null;
    return std.mem.trim(u8, rest, "/");
}

/// The jail path (relative to the jail's root, no leading slash) at which `hidden` appears
/// through a source directory placed at `dst`, written into `buf`; null when it does not
/// appear there or the result does not fit.
pub fn jailPath(buf: []u8, src: []const u8, dst: []const u8, hidden: []const u8) ?[:0]const u8 {
    const rest = below(src, hidden) orelse return null;
    const d = std.mem.trim(u8, dst, "/");
    const sep: []const u8 = if (d.len > 0 and rest.len > 0) "/" else "";
    return std.fmt.bufPrintZ(buf, "{s}{s}{s}", .{ d, sep, rest }) catch null;
}

test "a path below a source shows below the source's jail path" {
    var buf: [256]u8 = undefined;
    try std.testing.expectEqualStrings("usr/local/lj", jailPath(&buf, "/usr", "/usr", "/usr/local/lj").?);
    try std.testing.expectEqualStrings("x/lj", jailPath(&buf, "/usr/local/", "/x", "/usr/local/lj").?);
    try std.testing.expectEqualStrings("srv/state", jailPath(&buf, "/", "/", "/srv/state").?);
    try std.testing.expectEqualStrings("mnt", jailPath(&buf, "/var/lj", "/mnt", "/var/lj").?);
    // The source is the hidden path itself, placed at the root: the whole tree is state.
    try std.testing.expectEqualStrings("", jailPath(&buf, "/var/lj", "/", "/var/lj").?);
}

test "paths that merely share a prefix, and paths above the source, do not show" {
    var buf: [256]u8 = undefined;
    try std.testing.expect(jailPath(&buf, "/usr", "/usr", "/usr2/lj") == null);
    try std.testing.expect(jailPath(&buf, "/usr/local/lj/paas/services/db/data", "/data", "/usr/local/lj") == null);
    try std.testing.expect(jailPath(&buf, "/opt", "/opt", "/usr/local/lj") == null);
    var tiny: [4]u8 = undefined;
    try std.testing.expect(jailPath(&tiny, "/usr", "/usr", "/usr/local/lj") == null);
}
