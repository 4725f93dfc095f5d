//! What every step of a Linux jail's setup holds: the child's context (spec, status pipe,
//! trace, idmapped trees), how it reports a failure and exits, and path building without an
//! allocator. The steps themselves are linux.zig (the process), linux_mounts.zig (the root)
//! and linux_cgroups.zig (limits).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const idmap = @import("idmap.zig");
const Spec = spec_mod.Spec;

pub const path_max = 4096;

/// An errno as the number the status line and error texts carry.
pub fn errnoCode(e: linux.E) u16 {
    return @intFromEnum(e);
}

pub const Child = struct {
    trace: *sys.Trace,
    spec: *const Spec,
    status_fd: i32,
    /// A user-namespaced jail's idmapped layers and binds, attached and closed as they are used.
    trees: ?*idmap.Trees = null,

    /// Reports a setup failure on the status pipe ("E errno text") and exits.
    pub fn die(c: *const Child, e: linux.E, comptime fmt: []const u8, args: anytype) noreturn {
        var text: [700]u8 = undefined;
        const t = errtext.format(&text, errnoCode(e), fmt, args);
        var line: [720]u8 = undefined;
        const l = std.fmt.bufPrint(&line, "{c} {d} {s}\n", .{ abi.status_error, errnoCode(e), t }) catch "E 5 jail setup\n";
        c.trace.flush(c.status_fd, l);
        linux.exit_group(127);
    }

    pub fn check(c: *const Child, rc: usize, comptime fmt: []const u8, args: anytype) void {
        if (errno(rc)) |e| c.die(e, fmt, args);
    }

    /// A step of a traced jail's setup (spec flag `trace`).
    pub fn mark(c: *const Child, step: []const u8) void {
        c.trace.mark(step);
    }
};

pub const Path = struct {
    buf: [path_max]u8 = undefined,
    pub fn join(p: *Path, c: *const Child, parts: anytype) [:0]const u8 {
        var w = std.Io.Writer.fixed(p.buf[0 .. path_max - 1]);
        inline for (parts) |part| w.writeAll(part) catch c.die(.NAMETOOLONG, "path too long", .{});
        p.buf[w.end] = 0;
        return p.buf[0..w.end :0];
    }
};
