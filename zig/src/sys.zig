//! Small Linux syscall helpers shared by the shim, the keeper and the native ljspawn.
const std = @import("std");
const linux = std.os.linux;

/// __WALL: wait for children whatever their exit signal (clone children included).
pub const W_ALL: u32 = 0x40000000;
pub const F_DUPFD_CLOEXEC: i32 = 1030;

/// The errno of a raw syscall return value, or null on success.
pub fn errno(rc: usize) ?linux.E {
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}
