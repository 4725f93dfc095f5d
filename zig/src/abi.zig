//! Types shared across the C ABI. TypeScript mirrors them in src/jail/ffi.ts; the
//! compile-time size checks below fail the build if the two could drift apart.
const std = @import("std");

pub const abi_version: u32 = 1;

/// Filled by lj_spawn. Descriptors are -1 when not requested. All are close-on-exec.
pub const SpawnOut = extern struct {
    /// Host pid of the jail's first process (the keeper, pid 1 inside on Linux).
    pid: i32,
    /// Read end of the status pipe: "E errno text", "X code" or "S signal" lines, then EOF.
    status_fd: i32,
    /// Write end of the sync pipe: one byte "g" lets the jail run its payload; EOF aborts it.
    sync_fd: i32,
    stdin_fd: i32,
    stdout_fd: i32,
    stderr_fd: i32,
    reserved: [2]i32,
};

comptime {
    std.debug.assert(@sizeOf(SpawnOut) == 32);
}

/// Status lines (keeper/child -> owner). Kept as text: trivial to parse and to debug.
pub const status_error = 'E';
pub const status_exit = 'X';
pub const status_signal = 'S';
/// The owner writes this byte to the sync pipe to release the payload.
pub const sync_go: u8 = 'g';
/// Or this one, then a u32 (little-endian) length and a payload spec (argv, env, cwd, uid, gid,
/// caps, payload flags) that replaces the spawn-time payload: how pre-made jails are started.
pub const sync_payload: u8 = 'p';
pub const payload_max = 256 * 1024;
