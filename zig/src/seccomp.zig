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

const max_insns = 256;

fn nr(comptime name: []const u8) ?u32 {
    if (!@hasField(linux.SYS, name)) return null;
    return @intCast(@intFromEnum(@field(linux.SYS, name)));
}

/// What the filter does with one syscall number; everything not listed is allowed.
const Action = enum { eperm, enosys, ns_flags, ioctl };
const Rule = struct { nr: u32, action: Action };

/// The rules, sorted by syscall number.
fn rules() []const Rule {
    comptime {
        var list: [denied.len + 4]Rule = undefined;
        var n: usize = 0;
        for (denied) |name| if (nr(name)) |k| {
            list[n] = .{ .nr = k, .action = .eperm };
            n += 1;
        };
        // clone3 passes flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
        if (nr("clone3")) |k| {
            list[n] = .{ .nr = k, .action = .enosys };
            n += 1;
        }
        for ([_][]const u8{ "clone", "unshare" }) |name| {
            list[n] = .{ .nr = nr(name).?, .action = .ns_flags };
            n += 1;
        }
        list[n] = .{ .nr = nr("ioctl").?, .action = .ioctl };
        n += 1;
        std.sort.insertion(Rule, list[0..n], {}, struct {
            fn lt(_: void, a: Rule, b: Rule) bool {
                return a.nr < b.nr;
            }
        }.lt);
        const out = list[0..n].*;
        return &out;
    }
}

const Builder = struct {
    insns: [max_insns]Insn = undefined,
    n: usize = 0,
    /// Leaf jumps to the shared action blocks, patched once the blocks are placed.
    fixups: [max_insns]struct { at: usize, action: Action } = undefined,
    nfix: usize = 0,

    fn add(b: *Builder, code: u16, jt: u8, jf: u8, k: u32) usize {
        b.insns[b.n] = .{ .code = code, .jt = jt, .jf = jf, .k = k };
        b.n += 1;
        return b.n - 1;
    }

    /// A binary search over the sorted rules: a syscall takes about log2(rules) comparisons,
    /// not one per rule. That matters twice: at every syscall, and when the filter is
    /// installed, where the kernel emulates it for every syscall number to find those it can
    /// allow without running it (a linear chain made that cost a tenth of a millisecond).
    fn search(b: *Builder, rs: []const Rule) void {
        if (rs.len <= 3) {
            for (rs) |r| {
                b.fixups[b.nfix] = .{ .at = b.add(JEQ_K, 0, 0, r.nr), .action = r.action };
                b.nfix += 1;
            }
            _ = b.add(RET_K, 0, 0, RET_ALLOW);
            return;
        }
        const mid = rs.len / 2;
        const split = b.add(JGE_K, 0, 0, rs[mid].nr);
        b.search(rs[0..mid]);
        b.insns[split].jt = @intCast(b.n - split - 1);
        b.search(rs[mid..]);
    }
};

fn build() Builder {
    @setEvalBranchQuota(100_000);
    var b = Builder{};
    _ = b.add(LD_W_ABS, 0, 0, off_arch);
    _ = b.add(JEQ_K, 1, 0, audit_arch);
    _ = b.add(RET_K, 0, 0, RET_KILL_PROCESS);
    _ = b.add(LD_W_ABS, 0, 0, off_nr);
    if (builtin.cpu.arch == .x86_64) {
        // The x32 ABI aliases every syscall number with bit 30 set: refuse it wholesale.
        _ = b.add(JGE_K, 0, 1, 0x40000000);
        _ = b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.NOSYS));
    }
    b.search(rules());

    // The shared action blocks.
    var at: [4]usize = undefined;
    at[@intFromEnum(Action.eperm)] = b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));
    at[@intFromEnum(Action.enosys)] = b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.NOSYS));
    // clone and unshare: no new namespaces.
    at[@intFromEnum(Action.ns_flags)] = b.add(LD_W_ABS, 0, 0, offArgLow(0));
    _ = b.add(JSET_K, 0, 1, ns_flags);
    _ = b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));
    _ = b.add(RET_K, 0, 0, RET_ALLOW);
    // ioctl: only the low 32 bits of the request are meaningful to the kernel.
    at[@intFromEnum(Action.ioctl)] = b.add(LD_W_ABS, 0, 0, offArgLow(1));
    _ = b.add(JEQ_K, 2, 0, 0x5412); // TIOCSTI
    _ = b.add(JEQ_K, 1, 0, 0x541C); // TIOCLINUX
    _ = b.add(RET_K, 0, 0, RET_ALLOW);
    _ = b.add(RET_K, 0, 0, RET_ERRNO | @intFromEnum(linux.E.PERM));

    for (b.fixups[0..b.nfix]) |f| b.insns[f.at].jt = @intCast(at[@intFromEnum(f.action)] - f.at - 1);
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

const filter = build();

test "filter fits and every jump stays inside the program" {
    try std.testing.expect(filter.n < max_insns);
    for (filter.insns[0..filter.n], 0..) |insn, i| {
        if (insn.code == JEQ_K or insn.code == JGE_K or insn.code == JSET_K) {
            try std.testing.expect(i + 1 + insn.jt < filter.n);
            try std.testing.expect(i + 1 + insn.jf < filter.n);
        }
    }
    try std.testing.expectEqual(@as(u16, RET_K), filter.insns[filter.n - 1].code);
}

/// Runs the filter the way the kernel does, over a seccomp_data of (arch, nr, args).
fn run(arch: u32, sysno: u32, args: [6]u64) struct { ret: u32, steps: usize } {
    var data: [64]u8 = std.mem.zeroes([64]u8);
    std.mem.writeInt(u32, data[0..4], sysno, .little);
    std.mem.writeInt(u32, data[4..8], arch, .little);
    for (args, 0..) |a, i| std.mem.writeInt(u64, data[16 + 8 * i ..][0..8], a, .little);
    var acc: u32 = 0;
    var pc: usize = 0;
    var steps: usize = 0;
    while (true) : (steps += 1) {
        const insn = filter.insns[pc];
        pc += 1;
        switch (insn.code) {
            LD_W_ABS => acc = std.mem.readInt(u32, data[insn.k..][0..4], .little),
            JEQ_K => pc += if (acc == insn.k) insn.jt else insn.jf,
            JGE_K => pc += if (acc >= insn.k) insn.jt else insn.jf,
            JSET_K => pc += if (acc & insn.k != 0) insn.jt else insn.jf,
            RET_K => return .{ .ret = insn.k, .steps = steps },
            else => unreachable,
        }
    }
}

test "the filter denies exactly the listed syscalls, in few steps" {
    const eperm = RET_ERRNO | @intFromEnum(linux.E.PERM);
    const zero = [_]u64{0} ** 6;
    var sysno: u32 = 0;
    while (sysno < 1024) : (sysno += 1) {
        var expect: u32 = RET_ALLOW;
        inline for (denied) |name| if (nr(name)) |k| {
            if (k == sysno) expect = eperm;
        };
        if (nr("clone3") == sysno) expect = RET_ERRNO | @intFromEnum(linux.E.NOSYS);
        const r = run(audit_arch, sysno, zero);
        try std.testing.expectEqual(expect, r.ret);
        try std.testing.expect(r.steps < 16);
    }
    // clone and unshare: plain forks and file-table unsharing pass, namespaces do not.
    for ([_]u32{ nr("clone").?, nr("unshare").? }) |k| {
        try std.testing.expectEqual(RET_ALLOW, run(audit_arch, k, .{ linux.SIG.CHLD, 0, 0, 0, 0, 0 }).ret);
        try std.testing.expectEqual(eperm, run(audit_arch, k, .{ linux.CLONE.NEWUSER, 0, 0, 0, 0, 0 }).ret);
        try std.testing.expectEqual(eperm, run(audit_arch, k, .{ linux.CLONE.NEWNS | linux.SIG.CHLD, 0, 0, 0, 0, 0 }).ret);
    }
    const ioctl = nr("ioctl").?;
    try std.testing.expectEqual(eperm, run(audit_arch, ioctl, .{ 0, 0x5412, 0, 0, 0, 0 }).ret);
    try std.testing.expectEqual(eperm, run(audit_arch, ioctl, .{ 0, 0xffff_ffff_0000_5412, 0, 0, 0, 0 }).ret);
    try std.testing.expectEqual(eperm, run(audit_arch, ioctl, .{ 0, 0x541C, 0, 0, 0, 0 }).ret);
    try std.testing.expectEqual(RET_ALLOW, run(audit_arch, ioctl, .{ 0, 0x5401, 0, 0, 0, 0 }).ret); // TCGETS
    // Another architecture is killed outright; x32 numbers are refused.
    try std.testing.expectEqual(RET_KILL_PROCESS, run(0x40000003, 1, zero).ret);
    if (builtin.cpu.arch == .x86_64)
        try std.testing.expectEqual(RET_ERRNO | @intFromEnum(linux.E.NOSYS), run(audit_arch, 0x40000000 | 1, zero).ret);
}
