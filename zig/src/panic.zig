//! The shim's panic handler (a failed safety check: a bug). It writes one line to stderr and
//! ends the calling process at once. The standard handler is wrong here: the shim's children
//! and the pool's makers share the owner's memory (its "already panicking" state too) and run
//! with every signal blocked, so its SIGABRT never arrives and a second panicking process waits
//! forever; either way a jail's setup would hang instead of failing.
const std = @import("std");
const builtin = @import("builtin");

pub fn handler(msg: []const u8, first_trace_addr: ?usize) noreturn {
    @branchHint(.cold);
    _ = first_trace_addr;
    const head = "lightjail: internal error: ";
    _ = std.posix.system.write(2, head, head.len);
    _ = std.posix.system.write(2, msg.ptr, msg.len);
    _ = std.posix.system.write(2, "\n", 1);
    if (builtin.os.tag == .linux) std.os.linux.exit_group(134) else std.c._exit(134);
}
