//! Small Linux syscall helpers shared by the shim, the keeper and the native ljspawn.
const std = @import("std");
const linux = std.os.linux;

/// __WALL: wait for children whatever their exit signal (clone children included).
pub const W_ALL: u32 = 0x40000000;
pub const F_DUPFD_CLOEXEC: i32 = 1030;

/// Writes "T step nanoseconds" (CLOCK_MONOTONIC) on `fd`: a traced jail's timeline, read by
/// its owner from the status pipe.
pub fn traceMark(fd: i32, step: []const u8) void {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    const ns = @as(u64, @intCast(ts.sec)) * std.time.ns_per_s + @as(u64, @intCast(ts.nsec));
    var buf: [64]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "T {s} {d}\n", .{ step, ns }) catch return;
    _ = linux.write(fd, line.ptr, line.len);
}

/// The errno of a raw syscall return value, or null on success.
pub fn errno(rc: usize) ?linux.E {
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}
