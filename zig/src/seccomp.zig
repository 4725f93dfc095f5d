//! The payload's seccomp filter: a deny-list on top of dropped capabilities. Capabilities
//! already stop mount, mknod, module loading and the like; the filter closes what they do
//! not: new user namespaces (a fresh set of capabilities over a new kernel surface), keyrings,
//! bpf, perf, userfaultfd, io_uring (which bypasses per-syscall filtering), the new mount
//! API, and terminal input injection (TIOCSTI/TIOCLINUX). Unknown architectures are killed.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;

const Insn = extern struct { code: u16, jt: u8, jf: u8, k: u32 };
const Prog = extern struct { len: u16, filter: [*]const Insn };

const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;

const RET_KILL_PROCESS: u32 = 0x80000000;
const RET_ERRNO: u32 = 0x00050000;
const RET_ALLOW: u32 = 0x7fff0000;

const off_nr = 0;
const off_arch = 4;
fn offArgLow(i: u32) u32 {
    return 16 + 8 * i; // little-endian: the low 32 bits come first
}

const audit_arch: u32 = switch (builtin.cpu.arch) {
    .x86_64 => 0xC000003E,
    .aarch64 => 0xC00000B7,
    else => @compileError("seccomp filter: add this architecture's AUDIT_ARCH"),
};

const ns_flags: u32 = linux.CLONE.NEWNS | linux.CLONE.NEWUTS | linux.CLONE.NEWIPC | linux.CLONE.NEWUSER |
    linux.CLONE.NEWPID | linux.CLONE.NEWNET | linux.CLONE.NEWCGROUP | 0x80; // 0x80 = CLONE_NEWTIME

const denied = [_][]const u8{
    "mount",           "umount2",        "pivot_root",        "chroot",            "setns",
    "fsopen",          "fsconfig",       "fsmount",           "fspick",            "move_mount",
    "open_tree",       "mount_setattr",  "swapon",            "swapoff",           "reboot",
    "init_module",     "finit_module",   "delete_module",     "kexec_load",        "kexec_file_load",
    "acct",            "keyctl",         "add_key",           "request_key",       "bpf",
    "perf_event_open", "userfaultfd",    "open_by_handle_at", "quotactl",          "settimeofday",
    "clock_settime",   "clock_adjtime",  "adjtimex",          "syslog",            "lookup_dcookie",
    "vhangup",         "io_uring_setup", "io_uring_enter",    "io_uring_register", "uselib",
};

const max_insns = 160;

const Builder = struct {
    insns: [max_insns]Insn = undefined,
    n: usize = 0,
    fn add(b: *Builder, code: u16, jt: u8, jf: u8, k: u32) void {
        b.insns[b.n] = .{ .code = code, .jt = jt, .jf = jf, .k = k };
        b.n += 1;
    }
};

fn nr(comptime name: []const u8) ?u32 {
    if (!@hasField(linux.SYS, name)) return null;
    return @intCast(@intFromEnum(@field(linux.SYS, name)));
}

fn build() Builder {
    var b = Builder{};
    b.add(LD_W_ABS, 0, 0, off_arch);
    b.add(JEQ_K, 1, 0, audit_arch);
    b.add(RET_K, 0, 0, RET_KILL_PROCESS);
    b.add(LD_W_ABS, 0, 0, off_nr);
    if (builtin.cpu.arch == .x86_64) {
        // The x32 ABI aliases every syscall number with bit 30 set: refuse it wholesale.
        b.add(JGE_K, 0, 1, 0x40000000);
        b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.NOSYS));
    }
    inline for (denied) |name| {
        if (nr(name)) |n| {
            b.add(JEQ_K, 0, 1, n);
            b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));
        }
    }
    // clone3 passes flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
    if (nr("clone3")) |n| {
        b.add(JEQ_K, 0, 1, n);
        b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.NOSYS));
    }
    inline for (.{ "clone", "unshare" }) |name| {
        b.add(JEQ_K, 0, 4, nr(name).?);
        b.add(LD_W_ABS, 0, 0, offArgLow(0));
        b.add(JSET_K, 0, 1, ns_flags);
        b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));
        b.add(RET_K, 0, 0, RET_ALLOW);
    }
    // ioctl: only the low 32 bits of the request are meaningful to the kernel.
    b.add(JEQ_K, 0, 5, nr("ioctl").?);
    b.add(LD_W_ABS, 0, 0, offArgLow(1));
    b.add(JEQ_K, 2, 0, 0x5412); // TIOCSTI
    b.add(JEQ_K, 1, 0, 0x541C); // TIOCLINUX
    b.add(RET_K, 0, 0, RET_ALLOW);
    b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));
    b.add(RET_K, 0, 0, RET_ALLOW);
    return b;
}

/// Installs the filter on the calling thread (no_new_privs must already be set).
pub fn install() ?linux.E {
    const b = comptime build();
    const prog = Prog{ .len = @intCast(b.n), .filter = &b.insns };
    const rc = linux.syscall3(.seccomp, 1, 0, @intFromPtr(&prog)); // SECCOMP_SET_MODE_FILTER
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}

test "filter fits and every jump stays inside the program" {
    const b = comptime build();
    try std.testing.expect(b.n < max_insns);
    for (b.insns[0..b.n], 0..) |insn, i| {
        if (insn.code == JEQ_K or insn.code == JGE_K or insn.code == JSET_K) {
            try std.testing.expect(i + 1 + insn.jt < b.n);
            try std.testing.expect(i + 1 + insn.jf < b.n);
        }
    }
    try std.testing.expectEqual(@as(u16, RET_K), b.insns[b.n - 1].code);
}
