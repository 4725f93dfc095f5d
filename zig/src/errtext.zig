//! Error texts that name the failing step and path ("mount overlay on /x: EINVAL"), written
//! into caller-owned buffers. Formatting never allocates, so it is safe in a forked child.
const std = @import("std");
const builtin = @import("builtin");

pub const Errno = u16;

/// Symbolic name of an errno ("ENOENT"), or null for a number the target does not name.
pub fn errnoName(e: Errno) ?[]const u8 {
    const E = switch (builtin.os.tag) {
        .linux => std.os.linux.E,
        else => std.c.E,
    };
    inline for (@typeInfo(E).@"enum".fields) |f| {
        if (f.value == e) return f.name;
    }
    return null;
}

/// Writes "<what>: E<NAME>" (NUL-terminated, truncated to fit) and returns the text.
pub fn format(buf: []u8, errno: Errno, comptime fmt: []const u8, args: anytype) []const u8 {
    if (buf.len == 0) return buf;
    var w = std.Io.Writer.fixed(buf[0 .. buf.len - 1]);
    w.print(fmt, args) catch {};
    if (errno != 0) {
        if (errnoName(errno)) |name| {
            w.print(": E{s}", .{name}) catch {};
        } else {
            w.print(": errno {d}", .{errno}) catch {};
        }
    }
    const n = w.end;
    buf[n] = 0;
    return buf[0..n];
}

/// A caller-owned C buffer (pointer + length) as the shim's exports receive it.
pub const CBuf = struct {
    ptr: [*]u8,
    len: usize,

    pub fn slice(self: CBuf) []u8 {
        return self.ptr[0..self.len];
    }
    pub fn set(self: CBuf, errno: Errno, comptime fmt: []const u8, args: anytype) c_int {
        _ = format(self.slice(), errno, fmt, args);
        return if (errno == 0) @intFromEnum(std.posix.E.INVAL) else errno;
    }
};

test "format names the errno" {
    var buf: [64]u8 = undefined;
    const t = format(&buf, 2, "mount overlay on {s}", .{"/x"});
    try std.testing.expectEqualStrings("mount overlay on /x: ENOENT", t);
    try std.testing.expectEqual(@as(u8, 0), buf[t.len]);
}

test "format truncates instead of overflowing" {
    var buf: [8]u8 = undefined;
    const t = format(&buf, 22, "a very long step name", .{});
    try std.testing.expectEqual(@as(usize, 7), t.len);
    try std.testing.expectEqual(@as(u8, 0), buf[7]);
}
