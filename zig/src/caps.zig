//! Capability sets for the payload: everything dropped unless the spec keeps some
//! (builds that run a package manager as root keep CHOWN, DAC_OVERRIDE, FOWNER, ...).
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;

pub const CAP_KILL = 5;
pub const CAP_SETPCAP = 8;
const cap_last_possible = 63;

/// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP, so call it
/// while still privileged), so no later exec can regain them.
pub fn dropBounding(keep: u64) ?linux.E {
    var cap: u6 = 0;
    while (true) : (cap += 1) {
        if (keep & (@as(u64, 1) << cap) == 0) {
            const rc = linux.prctl(@intFromEnum(linux.PR.CAPBSET_DROP), cap, 0, 0, 0);
            if (errno(rc)) |e| {
                if (e == .INVAL) return null; // past the kernel's last capability
                return e;
            }
        }
        if (cap == cap_last_possible) return null;
    }
}

/// Sets effective and permitted to `keep`, inheritable to `inheritable`, and raises the
/// inheritable ones as ambient so they survive exec for a non-root uid.
pub fn restrict(keep: u64, inheritable: u64) ?linux.E {
    var hdr = linux.cap_user_header_t{ .version = 0x20080522, .pid = 0 };
    const data = [2]linux.cap_user_data_t{
        .{ .effective = @truncate(keep), .permitted = @truncate(keep), .inheritable = @truncate(inheritable) },
        .{ .effective = @truncate(keep >> 32), .permitted = @truncate(keep >> 32), .inheritable = @truncate(inheritable >> 32) },
    };
    if (errno(linux.capset(&hdr, &data[0]))) |e| return e;
    _ = linux.prctl(@intFromEnum(linux.PR.CAP_AMBIENT), 4, 0, 0, 0); // PR_CAP_AMBIENT_CLEAR_ALL
    var cap: u6 = 0;
    while (true) : (cap += 1) {
        if (inheritable & (@as(u64, 1) << cap) != 0) {
            if (errno(linux.prctl(@intFromEnum(linux.PR.CAP_AMBIENT), 2, cap, 0, 0))) |e| return e; // RAISE
        }
        if (cap == cap_last_possible) return null;
    }
}
