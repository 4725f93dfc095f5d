//! The payload's seccomp filter: an allow-list on top of dropped capabilities, modelled on the
//! set container runtimes allow by default. A jail runs whatever ordinary Linux programs do
//! (shells, compilers, language runtimes, databases, package managers as root with a few
//! capabilities); everything else the kernel offers is surface an attacker could use, and a
//! deny-list only closes the doors someone thought of. So the filter names what may run:
//!
//! - allowed syscalls run unfiltered (and the kernel caches them as always-allowed, so they
//!   do not even run the filter);
//! - a few are allowed with argument checks: `socket` (families and types), `socketpair`,
//!   `personality`, `clone`/`unshare` (no namespace flags), `ioctl` (no terminal injection);
//! - every other syscall the kernel headers we build against know fails with EPERM;
//! - numbers above the newest we know (syscalls added to the kernel since) fail with ENOSYS,
//!   which is what libcs and runtimes take as "kernel too old" and fall back from, where
//!   EPERM would read as a hard failure. That also covers x86_64's x32 numbers (bit 30 set),
//!   and clone3, whose flags are in memory a filter cannot read: libc then uses clone.
//!
//! Another architecture's syscall numbers (i386 on x86_64, arm32 on aarch64) kill the process.
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;

const Insn = extern struct { code: u16, jt: u8, jf: u8, k: u32 };
const Prog = extern struct { len: u16, filter: [*]const Insn };

const LD_W_ABS = 0x20;
const ALU_AND_K = 0x54;
const JA = 0x05;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;

const RET_KILL_PROCESS: u32 = 0x80000000;
const RET_ERRNO: u32 = 0x00050000;
const RET_ALLOW: u32 = 0x7fff0000;

fn retErrno(e: linux.E) u32 {
    return RET_ERRNO | @intFromEnum(e);
}

const off_nr = 0;
const off_arch = 4;
fn offArgLow(i: u32) u32 {
    return 16 + 8 * i; // little-endian: the low 32 bits come first
}

/// The architectures we build for. Each filter is built from that architecture's syscall table
/// (not only the host's), so the tests check both wherever they run.
const Arch = enum {
    x86_64,
    aarch64,

    fn Sys(comptime arch: Arch) type {
        return switch (arch) {
            .x86_64 => linux.syscalls.X64,
            .aarch64 => linux.syscalls.Arm64,
        };
    }

    fn audit(arch: Arch) u32 {
        return switch (arch) {
            .x86_64 => 0xC000003E,
            .aarch64 => 0xC00000B7,
        };
    }
};

const native: Arch = switch (builtin.cpu.arch) {
    .x86_64 => .x86_64,
    .aarch64 => .aarch64,
    else => @compileError("seccomp filter: add this architecture (its AUDIT_ARCH and syscall table)"),
};

/// Files and descriptors.
const files = [_][]const u8{
    "read",              "write",            "readv",             "writev",          "pread64",
    "pwrite64",          "preadv",           "pwritev",           "preadv2",         "pwritev2",
    "lseek",             "open",             "openat",            "openat2",         "creat",
    "close",             "close_range",      "dup",               "dup2",            "dup3",
    "fcntl",             "flock",            "fsync",             "fdatasync",       "syncfs",
    "sync",              "sync_file_range",  "truncate",          "ftruncate",       "fallocate",
    "fadvise64",         "readahead",        "sendfile",          "copy_file_range", "splice",
    "tee",               "vmsplice",         "stat",              "fstat",           "lstat",
    "fstatat64",         "statx",            "statfs",            "fstatfs",         "access",
    "faccessat",         "faccessat2",       "readlink",          "readlinkat",      "getdents",
    "getdents64",        "getcwd",           "chdir",             "fchdir",          "mkdir",
    "mkdirat",           "rmdir",            "rename",            "renameat",        "renameat2",
    "link",              "linkat",           "symlink",           "symlinkat",       "unlink",
    "unlinkat",          "mknod",            "mknodat",           "chmod",           "fchmod",
    "fchmodat",          "fchmodat2",        "chown",             "fchown",          "lchown",
    "fchownat",          "umask",            "utime",             "utimes",          "futimesat",
    "utimensat",         "setxattr",         "lsetxattr",         "fsetxattr",       "getxattr",
    "lgetxattr",         "fgetxattr",        "listxattr",         "llistxattr",      "flistxattr",
    "removexattr",       "lremovexattr",     "fremovexattr",      "setxattrat",      "getxattrat",
    "listxattrat",       "removexattrat",    "name_to_handle_at", "inotify_init",    "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "cachestat",         "statmount",       "listmount",
};

/// Waiting and events.
const waiting = [_][]const u8{
    "poll",            "ppoll",           "select",     "pselect6",     "epoll_create",
    "epoll_create1",   "epoll_ctl",       "epoll_wait", "epoll_pwait",  "epoll_pwait2",
    "eventfd",         "eventfd2",        "signalfd",   "signalfd4",    "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "pipe",       "pipe2",        "io_setup",
    "io_destroy",      "io_submit",       "io_cancel",  "io_getevents", "io_pgetevents",
};

/// Memory.
const memory = [_][]const u8{
    "brk",          "mmap",          "munmap",     "mremap",           "mprotect",
    "msync",        "mincore",       "madvise",    "mlock",            "mlock2",
    "munlock",      "mlockall",      "munlockall", "remap_file_pages", "membarrier",
    "memfd_create", "pkey_mprotect", "pkey_alloc", "pkey_free",        "map_shadow_stack",
    "mseal",
};

/// Processes and threads (clone and unshare are checked below). ptrace and
/// process_vm_readv/writev, as in container runtimes: debuggers and sanitizers need them,
/// and they only reach the jail's own processes (its pid namespace; the keeper is not
/// dumpable); since Linux 4.8 a tracer cannot use them to get around this filter.
const processes = [_][]const u8{
    "fork",                   "vfork",             "execve",            "execveat",                "exit",
    "exit_group",             "wait4",             "waitid",            "kill",                    "tkill",
    "tgkill",                 "set_tid_address",   "set_robust_list",   "get_robust_list",         "futex",
    "futex_waitv",            "futex_wake",        "futex_wait",        "futex_requeue",           "rseq",
    "restart_syscall",        "arch_prctl",        "set_thread_area",   "get_thread_area",         "prctl",
    "seccomp",                "capget",            "capset",            "getpid",                  "getppid",
    "gettid",                 "getpgid",           "setpgid",           "getpgrp",                 "getsid",
    "setsid",                 "pidfd_open",        "pidfd_send_signal", "process_mrelease",        "ptrace",
    "process_vm_readv",       "process_vm_writev", "uretprobe",         "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self",
};

/// Identity (what a process may switch to is the capabilities' business).
const identity = [_][]const u8{
    "getuid",    "geteuid",   "getgid",    "getegid",  "getresuid",
    "getresgid", "getgroups", "setuid",    "setgid",   "setreuid",
    "setregid",  "setresuid", "setresgid", "setfsuid", "setfsgid",
    "setgroups",
};

/// Signals and time.
const signals_time = [_][]const u8{
    "rt_sigaction",    "rt_sigprocmask",    "rt_sigreturn",  "rt_sigpending",    "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack",      "pause",
    "alarm",           "getitimer",         "setitimer",     "nanosleep",        "clock_nanosleep",
    "clock_gettime",   "clock_getres",      "gettimeofday",  "time",             "times",
    "timer_create",    "timer_settime",     "timer_gettime", "timer_getoverrun", "timer_delete",
};

/// Scheduling, limits, system information.
const scheduling = [_][]const u8{
    "sched_yield",            "sched_setparam",         "sched_getparam",        "sched_setscheduler", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "sched_setaffinity",  "sched_getaffinity",
    "sched_setattr",          "sched_getattr",          "getpriority",           "setpriority",        "ioprio_get",
    "ioprio_set",             "getcpu",                 "getrlimit",             "setrlimit",          "prlimit64",
    "getrusage",              "sysinfo",                "uname",                 "getrandom",
};

/// Sockets (socket and socketpair are checked below) and System V / POSIX IPC.
const sockets_ipc = [_][]const u8{
    "bind",         "listen",          "accept",     "accept4",       "connect",
    "getsockname",  "getpeername",     "sendto",     "recvfrom",      "sendmsg",
    "recvmsg",      "sendmmsg",        "recvmmsg",   "shutdown",      "setsockopt",
    "getsockopt",   "shmget",          "shmat",      "shmdt",         "shmctl",
    "semget",       "semop",           "semtimedop", "semctl",        "msgget",
    "msgsnd",       "msgrcv",          "msgctl",     "mq_open",       "mq_unlink",
    "mq_timedsend", "mq_timedreceive", "mq_notify",  "mq_getsetattr",
};

/// Syscalls a jail may make without conditions. Names missing on one architecture (the old
/// non-*at calls on aarch64, arch_prctl) are skipped there. Deliberately absent (EPERM), with
/// the reasons: the mount API, pivot_root, chroot, setns (the jail's view of the filesystem and
/// namespaces is fixed); swap, reboot, modules, kexec, acct, quotas, syslog, vhangup, iopl and
/// ioperm, modify_ldt (the machine's business); keyrings (not namespaced); bpf, perf_event_open,
/// userfaultfd, io_uring (large kernel surfaces, io_uring also bypasses this filter); clock
/// setting and adjtimex; sethostname/setdomainname (fixed by the jail spec); fanotify and
/// open_by_handle_at (handles reach files outside the root); kcmp, pidfd_getfd,
/// process_madvise (another process's descriptors and memory); memfd_secret (memory the
/// kernel cannot inspect); the NUMA memory policy calls (placement on the host's nodes); the
/// LSM attribute calls; and the obsolete or never-implemented ones.
const allowed = files ++ waiting ++ memory ++ processes ++ identity ++ signals_time ++ scheduling ++ sockets_ipc;

/// Syscalls that must never be on the list: checked when the filter is compiled and by the
/// tests (this is not the whole of what is refused; everything not allowed is).
const denied = [_][]const u8{
    "mount",             "umount2",          "pivot_root",    "chroot",            "setns",
    "fsopen",            "fsconfig",         "fsmount",       "fspick",            "move_mount",
    "open_tree",         "open_tree_attr",   "mount_setattr", "swapon",            "swapoff",
    "reboot",            "init_module",      "finit_module",  "delete_module",     "kexec_load",
    "kexec_file_load",   "acct",             "keyctl",        "add_key",           "request_key",
    "bpf",               "perf_event_open",  "userfaultfd",   "open_by_handle_at", "quotactl",
    "quotactl_fd",       "settimeofday",     "clock_settime", "clock_adjtime",     "adjtimex",
    "syslog",            "lookup_dcookie",   "vhangup",       "io_uring_setup",    "io_uring_enter",
    "io_uring_register", "uselib",           "kcmp",          "pidfd_getfd",       "process_madvise",
    "memfd_secret",      "mbind",            "set_mempolicy", "get_mempolicy",     "set_mempolicy_home_node",
    "migrate_pages",     "move_pages",       "sethostname",   "setdomainname",     "iopl",
    "ioperm",            "modify_ldt",       "fanotify_init", "fanotify_mark",     "lsm_get_self_attr",
    "lsm_set_self_attr", "lsm_list_modules", "ustat",         "sysfs",             "nfsservctl",
};

// socket(2) arguments.
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const SOCK_TYPE_MASK = 0xf; // the kernel masks the type the same way (NONBLOCK/CLOEXEC above)
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const NETLINK_ROUTE = 0;
const NETLINK_SOCK_DIAG = 4;

/// personality(2) values that change nothing that matters: PER_LINUX, PER_LINUX32, UNAME26
/// (alone and with PER_LINUX32), and 0xffffffff, which only asks for the current value.
/// Not ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO and the like.
const personalities = [_]u32{ 0, 0x0008, 0x20000, 0x20008, 0xffffffff };

const ns_flags: u32 = linux.CLONE.NEWNS | linux.CLONE.NEWUTS | linux.CLONE.NEWIPC | linux.CLONE.NEWUSER |
    linux.CLONE.NEWPID | linux.CLONE.NEWNET | linux.CLONE.NEWCGROUP | 0x80; // 0x80 = CLONE_NEWTIME

const TIOCSTI = 0x5412;
const TIOCLINUX = 0x541C;

fn nr(comptime arch: Arch, comptime name: []const u8) ?u32 {
    if (!@hasField(arch.Sys(), name)) return null;
    return @intCast(@intFromEnum(@field(arch.Sys(), name)));
}

/// The newest syscall number the kernel headers we build against know.
fn newest(comptime arch: Arch) u32 {
    return comptime blk: {
        var max: u32 = 0;
        for (@typeInfo(arch.Sys()).@"enum".fields) |f| max = @max(max, f.value);
        break :blk max;
    };
}

/// What the filter does with one syscall number.
const Action = enum { allow, eperm, enosys, socket, socketpair, personality, ns_flags, ioctl };

/// The action for each syscall number up to `newest`; above it, ENOSYS.
fn actions(comptime arch: Arch) [newest(arch) + 1]Action {
    @setEvalBranchQuota(200_000);
    var a = [_]Action{.eperm} ** (newest(arch) + 1);
    for (allowed) |name| {
        if (!@hasField(linux.syscalls.X64, name) and !@hasField(linux.syscalls.Arm64, name))
            @compileError("seccomp: no syscall named " ++ name);
        for (denied) |d| if (std.mem.eql(u8, d, name)) @compileError("seccomp: " ++ name ++ " is both allowed and denied");
        if (nr(arch, name)) |k| a[k] = .allow;
    }
    a[nr(arch, "socket").?] = .socket;
    a[nr(arch, "socketpair").?] = .socketpair;
    a[nr(arch, "personality").?] = .personality;
    a[nr(arch, "clone").?] = .ns_flags;
    a[nr(arch, "unshare").?] = .ns_flags;
    a[nr(arch, "ioctl").?] = .ioctl;
    a[nr(arch, "clone3").?] = .enosys;
    return a;
}

/// A run of syscall numbers from `first` up to the next segment's first, with one action.
const Segment = struct { first: u32, action: Action };

/// The number line cut into runs of one action, ending with ENOSYS above `newest`.
fn segments(comptime arch: Arch) []const Segment {
    comptime {
        const a = actions(arch);
        var list: [newest(arch) + 2]Segment = undefined;
        var n: usize = 0;
        for (a, 0..) |act, k| {
            if (n == 0 or list[n - 1].action != act) {
                list[n] = .{ .first = @intCast(k), .action = act };
                n += 1;
            }
        }
        list[n] = .{ .first = newest(arch) + 1, .action = .enosys };
        n += 1;
        const out = list[0..n].*;
        return &out;
    }
}

/// Where a jump goes: the next instruction, an instruction by index, or a labelled place.
const Target = union(enum) { next, at: usize, to: Label };

/// The places jumps go to by name: the shared returns and the argument checks.
const Label = enum {
    allow,
    eperm,
    enosys,
    kill,
    afnosupport,
    protonosupport,
    opnotsupp,
    socket,
    inet,
    netlink,
    socketpair,
    personality,
    ns_flags,
    ioctl,

    fn of(action: Action) Label {
        return switch (action) {
            inline else => |a| @field(Label, @tagName(a)),
        };
    }
};

const max_insns = 256;

/// Builds a program with symbolic forward jumps, resolved at the end. Every outcome is one
/// shared return at the end of the program, and each argument check exists once, however many
/// search leaves lead to it: the kernel's cost to install a filter grows with its length
/// (converting and compiling it), so the program is kept short.
const Builder = struct {
    insns: [max_insns]Insn = undefined,
    n: usize = 0,
    jumps: [max_insns]struct { jt: Target, jf: Target } = undefined,
    labels: [@typeInfo(Label).@"enum".fields.len]?usize = .{null} ** @typeInfo(Label).@"enum".fields.len,

    fn add(b: *Builder, code: u16, k: u32) void {
        b.insns[b.n] = .{ .code = code, .jt = 0, .jf = 0, .k = k };
        b.jumps[b.n] = .{ .jt = .next, .jf = .next };
        b.n += 1;
    }

    fn jump(b: *Builder, code: u16, k: u32, jt: Target, jf: Target) void {
        b.add(code, k);
        b.jumps[b.n - 1] = .{ .jt = jt, .jf = jf };
    }

    fn label(b: *Builder, l: Label) void {
        b.labels[@intFromEnum(l)] = b.n;
    }

    fn ld(b: *Builder, off: u32) void {
        b.add(LD_W_ABS, off);
    }

    fn jeq(b: *Builder, k: u32, jt: Label, jf: Target) void {
        b.jump(JEQ_K, k, .{ .to = jt }, jf);
    }

    /// A binary search over the segments: log2(segments) comparisons to the action, both at
    /// every filtered syscall and when the filter is installed, where the kernel emulates it
    /// for every syscall number to find those it can allow without running it. A one-segment
    /// half is a jump straight to its action.
    fn search(b: *Builder, segs: []const Segment) void {
        const mid = segs.len / 2;
        const left = segs[0..mid];
        const right = segs[mid..];
        const node = b.n;
        const to_left: Target = if (left.len == 1) .{ .to = .of(left[0].action) } else .next;
        b.jump(JGE_K, right[0].first, .next, to_left);
        if (left.len > 1) b.search(left);
        b.jumps[node].jt = if (right.len == 1) .{ .to = .of(right[0].action) } else .{ .at = b.n };
        if (right.len > 1) b.search(right);
    }

    /// socket(family, type, protocol). Unix, IPv4/IPv6 streams and datagrams (TCP, UDP, ICMP
    /// echo sockets), and netlink for routing information (getifaddrs, `ip addr`) and socket
    /// diagnostics (`ss`). Not AF_VSOCK (not bound to a network namespace: it reaches the
    /// hypervisor and other guests), AF_PACKET or raw IP (sniffing and forging the jail's
    /// traffic; SOCK_PACKET on AF_INET is the old spelling of AF_PACKET), nor the other
    /// families and netlink protocols, each a kernel subsystem the jail has no use for. Refusals
    /// use the errno the kernel gives when that family or protocol is missing, which programs
    /// handle as "not available" (libaudit, for one, gives up quietly on NETLINK_AUDIT), and
    /// EPERM for raw IP, as the kernel does without CAP_NET_RAW.
    fn socket(b: *Builder) void {
        b.label(.socket);
        b.ld(offArgLow(0));
        b.jeq(AF_UNIX, .allow, .next);
        b.jeq(AF_INET, .inet, .next);
        b.jeq(AF_INET6, .inet, .next);
        b.jeq(AF_NETLINK, .netlink, .{ .to = .afnosupport });
        b.label(.inet);
        b.ld(offArgLow(1));
        b.add(ALU_AND_K, SOCK_TYPE_MASK);
        b.jeq(SOCK_STREAM, .allow, .next);
        b.jeq(SOCK_DGRAM, .allow, .{ .to = .eperm });
        b.label(.netlink);
        b.ld(offArgLow(2));
        b.jeq(NETLINK_ROUTE, .allow, .next);
        b.jeq(NETLINK_SOCK_DIAG, .allow, .{ .to = .protonosupport });
    }

    /// The argument checks other than socket's.
    fn checks(b: *Builder) void {
        // Only unix sockets come in pairs; do not let other families even be made.
        b.label(.socketpair);
        b.ld(offArgLow(0));
        b.jeq(AF_UNIX, .allow, .{ .to = .opnotsupp });

        b.label(.personality);
        b.ld(offArgLow(0));
        for (personalities, 0..) |p, i|
            b.jeq(p, .allow, if (i + 1 < personalities.len) .next else .{ .to = .eperm });

        // clone and unshare: plain forks, threads and unsharing files pass; no new
        // namespaces (notably user namespaces: a fresh set of capabilities).
        b.label(.ns_flags);
        b.ld(offArgLow(0));
        b.jump(JSET_K, ns_flags, .{ .to = .eperm }, .{ .to = .allow });

        // ioctl: no terminal input injection. Only the low 32 bits of the request count.
        b.label(.ioctl);
        b.ld(offArgLow(1));
        b.jeq(TIOCSTI, .eperm, .next);
        b.jeq(TIOCLINUX, .eperm, .{ .to = .allow });
    }

    fn returns(b: *Builder) void {
        const rets = [_]struct { Label, u32 }{
            .{ .allow, RET_ALLOW },                    .{ .eperm, retErrno(.PERM) },
            .{ .enosys, retErrno(.NOSYS) },            .{ .kill, RET_KILL_PROCESS },
            .{ .afnosupport, retErrno(.AFNOSUPPORT) }, .{ .protonosupport, retErrno(.PROTONOSUPPORT) },
            .{ .opnotsupp, retErrno(.OPNOTSUPP) },
        };
        for (rets) |r| {
            b.label(r[0]);
            b.add(RET_K, r[1]);
        }
    }

    /// Turns every symbolic jump into its offset (at most 255 instructions ahead).
    fn resolve(b: *Builder) void {
        for (b.jumps[0..b.n], b.insns[0..b.n], 0..) |j, *insn, i| {
            insn.jt = b.offset(i, j.jt);
            insn.jf = b.offset(i, j.jf);
        }
    }

    fn offset(b: *const Builder, from: usize, t: Target) u8 {
        const to = switch (t) {
            .next => return 0,
            .at => |at| at,
            .to => |l| b.labels[@intFromEnum(l)] orelse @compileError("seccomp: unplaced label " ++ @tagName(l)),
        };
        if (to <= from or to - from - 1 > 255) @compileError("seccomp: a jump out of reach; keep the program under 256 instructions");
        return @intCast(to - from - 1);
    }
};

fn build(comptime arch: Arch) Builder {
    @setEvalBranchQuota(1_000_000);
    var b = Builder{};
    b.ld(off_arch);
    b.jump(JEQ_K, arch.audit(), .next, .{ .to = .kill });
    b.ld(off_nr);
    b.search(segments(arch));
    b.socket();
    b.checks();
    b.returns();
    b.resolve();
    return b;
}

/// Installs the filter on the calling thread (no_new_privs must already be set).
pub fn install() ?linux.E {
    const filter = comptime build(native);
    const prog = Prog{ .len = @intCast(filter.n), .filter = &filter.insns };
    const rc = linux.syscall3(.seccomp, 1, 0, @intFromPtr(&prog)); // SECCOMP_SET_MODE_FILTER
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}

const arches = [_]Arch{ .x86_64, .aarch64 };
const filters = [_]Builder{ build(.x86_64), build(.aarch64) };

test "each filter fits and every jump stays inside the program" {
    for (filters) |f| {
        try std.testing.expect(f.n < 256); // 4096 is the kernel's limit; a short filter installs fast
        for (f.insns[0..f.n], 0..) |insn, i| {
            switch (insn.code) {
                JEQ_K, JGE_K, JSET_K => {
                    try std.testing.expect(i + 1 + insn.jt < f.n);
                    try std.testing.expect(i + 1 + insn.jf < f.n);
                },
                JA => try std.testing.expect(i + 1 + insn.k < f.n),
                LD_W_ABS, ALU_AND_K, RET_K => {},
                else => return error.UnknownInstruction,
            }
        }
        try std.testing.expectEqual(@as(u16, RET_K), f.insns[f.n - 1].code);
    }
}

/// Runs a filter the way the kernel does, over a seccomp_data of (arch, nr, args).
fn runOn(f: *const Builder, audit: u32, sysno: u32, args: [6]u64) struct { ret: u32, steps: usize } {
    var data: [64]u8 = std.mem.zeroes([64]u8);
    std.mem.writeInt(u32, data[0..4], sysno, .little);
    std.mem.writeInt(u32, data[4..8], audit, .little);
    for (args, 0..) |a, i| std.mem.writeInt(u64, data[16 + 8 * i ..][0..8], a, .little);
    var acc: u32 = 0;
    var pc: usize = 0;
    var steps: usize = 0;
    while (true) : (steps += 1) {
        const insn = f.insns[pc];
        pc += 1;
        switch (insn.code) {
            LD_W_ABS => acc = std.mem.readInt(u32, data[insn.k..][0..4], .little),
            ALU_AND_K => acc &= insn.k,
            JA => pc += insn.k,
            JEQ_K => pc += if (acc == insn.k) insn.jt else insn.jf,
            JGE_K => pc += if (acc >= insn.k) insn.jt else insn.jf,
            JSET_K => pc += if (acc & insn.k != 0) insn.jt else insn.jf,
            RET_K => return .{ .ret = insn.k, .steps = steps },
            else => unreachable,
        }
    }
}

fn run(comptime arch: Arch, sysno: u32, args: [6]u64) struct { ret: u32, steps: usize } {
    const r = runOn(&filters[@intFromEnum(arch)], arch.audit(), sysno, args);
    return .{ .ret = r.ret, .steps = r.steps };
}

/// What `arch`'s filter answers to the named syscall.
fn call(comptime arch: Arch, comptime name: []const u8, args: [6]u64) u32 {
    return run(arch, nr(arch, name).?, args).ret;
}

const zero = [_]u64{0} ** 6;
const eperm = retErrno(.PERM);
const enosys = retErrno(.NOSYS);

test "allowed syscalls pass, everything else known is EPERM, newer numbers ENOSYS, in few steps" {
    inline for (arches) |arch| {
        // The syscalls with argument checks (and clone3), tested one by one below.
        const checked = [_]u32{ nr(arch, "socket").?, nr(arch, "socketpair").?, nr(arch, "personality").?, nr(arch, "clone").?, nr(arch, "unshare").?, nr(arch, "ioctl").?, nr(arch, "clone3").? };
        var sysno: u32 = 0;
        while (sysno < 2048) : (sysno += 1) {
            var expect: u32 = if (sysno > newest(arch)) enosys else eperm;
            inline for (allowed) |name| if (nr(arch, name)) |k| {
                if (k == sysno) expect = RET_ALLOW;
            };
            const r = run(arch, sysno, zero);
            try std.testing.expect(r.steps < 24);
            if (std.mem.indexOfScalar(u32, &checked, sysno) == null) try std.testing.expectEqual(expect, r.ret);
        }
        // What every program does.
        inline for (.{ "read", "write", "openat", "close", "mmap", "execve", "exit_group", "futex", "rt_sigreturn", "wait4", "fstat", "getrandom", "epoll_pwait", "prctl", "setresuid", "shmget", "semop", "pipe2", "sched_getaffinity" }) |name|
            try std.testing.expectEqual(RET_ALLOW, call(arch, name, zero));
        inline for (denied) |name| if (nr(arch, name) != null) try std.testing.expectEqual(eperm, call(arch, name, zero));
        try std.testing.expectEqual(enosys, call(arch, "clone3", zero));
        try std.testing.expectEqual(enosys, run(arch, 468, zero).ret); // file_getattr (Linux 6.17)
        try std.testing.expectEqual(enosys, run(arch, 0xffffffff, zero).ret);
    }
}

test "socket: unix, TCP/UDP and route/diag netlink only" {
    const SOCK_RAW = 3;
    const SOCK_SEQPACKET = 5;
    const SOCK_PACKET = 10;
    const NONBLOCK_CLOEXEC = 0x800 | 0x80000;
    const ok = [_][3]u64{
        .{ AF_UNIX, SOCK_STREAM, 0 },                    .{ AF_UNIX, SOCK_DGRAM | NONBLOCK_CLOEXEC, 0 },
        .{ AF_UNIX, SOCK_SEQPACKET, 0 },                 .{ AF_INET, SOCK_STREAM, 0 },
        .{ AF_INET, SOCK_STREAM | NONBLOCK_CLOEXEC, 6 }, .{ AF_INET6, SOCK_DGRAM, 17 },
        .{ AF_INET, SOCK_DGRAM, 1 }, // ICMP echo ("ping") sockets
        .{ AF_NETLINK, SOCK_RAW | 0x80000, NETLINK_ROUTE },
        .{ AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG },
    };
    const refused = [_]struct { args: [3]u64, ret: u32 }{
        .{ .args = .{ 40, SOCK_STREAM, 0 }, .ret = retErrno(.AFNOSUPPORT) }, // AF_VSOCK
        .{ .args = .{ 17, SOCK_RAW, 0x0300 }, .ret = retErrno(.AFNOSUPPORT) }, // AF_PACKET
        .{ .args = .{ 38, SOCK_SEQPACKET, 0 }, .ret = retErrno(.AFNOSUPPORT) }, // AF_ALG
        .{ .args = .{ AF_INET, SOCK_RAW, 1 }, .ret = eperm },
        .{ .args = .{ AF_INET6, SOCK_RAW | NONBLOCK_CLOEXEC, 58 }, .ret = eperm },
        .{ .args = .{ AF_INET, SOCK_PACKET, 0x0300 }, .ret = eperm },
        .{ .args = .{ AF_INET, SOCK_SEQPACKET, 132 }, .ret = eperm }, // SCTP
        .{ .args = .{ AF_NETLINK, SOCK_RAW, 9 }, .ret = retErrno(.PROTONOSUPPORT) }, // AUDIT
        .{ .args = .{ AF_NETLINK, SOCK_RAW, 12 }, .ret = retErrno(.PROTONOSUPPORT) }, // NETFILTER
        .{ .args = .{ AF_NETLINK, SOCK_DGRAM, 16 }, .ret = retErrno(.PROTONOSUPPORT) }, // GENERIC
        .{ .args = .{ AF_NETLINK, SOCK_DGRAM, 15 }, .ret = retErrno(.PROTONOSUPPORT) }, // KOBJECT_UEVENT
        // Only the low 32 bits of an int argument count to the kernel, and to the filter.
        .{ .args = .{ 0xffff_ffff_0000_0028, SOCK_STREAM, 0 }, .ret = retErrno(.AFNOSUPPORT) },
    };
    inline for (arches) |arch| {
        for (ok) |a| try std.testing.expectEqual(RET_ALLOW, call(arch, "socket", .{ a[0], a[1], a[2], 0, 0, 0 }));
        for (refused) |r| try std.testing.expectEqual(r.ret, call(arch, "socket", .{ r.args[0], r.args[1], r.args[2], 0, 0, 0 }));
        try std.testing.expectEqual(RET_ALLOW, call(arch, "socketpair", .{ AF_UNIX, SOCK_STREAM, 0, 0, 0, 0 }));
        try std.testing.expectEqual(retErrno(.OPNOTSUPP), call(arch, "socketpair", .{ 40, SOCK_STREAM, 0, 0, 0, 0 }));
    }
}

test "personality: only values that change nothing" {
    inline for (arches) |arch| {
        for (personalities) |p| try std.testing.expectEqual(RET_ALLOW, call(arch, "personality", .{ p, 0, 0, 0, 0, 0 }));
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ADDR_LIMIT_3GB, PER_LINUX32 with
        // ADDR_NO_RANDOMIZE, another execution domain.
        for ([_]u64{ 0x0040000, 0x0400000, 0x0100000, 0x8000000, 0x0040008, 1 }) |p|
            try std.testing.expectEqual(eperm, call(arch, "personality", .{ p, 0, 0, 0, 0, 0 }));
    }
}

test "clone and unshare: no namespaces; ioctl: no terminal injection" {
    // Plain forks, threads and file-table unsharing pass, namespaces do not.
    const thread = linux.CLONE.VM | linux.CLONE.FS | linux.CLONE.FILES | linux.CLONE.SIGHAND | linux.CLONE.THREAD | linux.CLONE.SYSVSEM | linux.CLONE.SETTLS;
    inline for (arches) |arch| {
        inline for (.{ "clone", "unshare" }) |name| {
            try std.testing.expectEqual(RET_ALLOW, call(arch, name, .{ linux.SIG.CHLD, 0, 0, 0, 0, 0 }));
            try std.testing.expectEqual(RET_ALLOW, call(arch, name, .{ thread, 0, 0, 0, 0, 0 }));
            try std.testing.expectEqual(eperm, call(arch, name, .{ linux.CLONE.NEWUSER, 0, 0, 0, 0, 0 }));
            try std.testing.expectEqual(eperm, call(arch, name, .{ linux.CLONE.NEWNS | linux.SIG.CHLD, 0, 0, 0, 0, 0 }));
            try std.testing.expectEqual(eperm, call(arch, name, .{ linux.CLONE.NEWNET, 0, 0, 0, 0, 0 }));
        }
        try std.testing.expectEqual(eperm, call(arch, "ioctl", .{ 0, TIOCSTI, 0, 0, 0, 0 }));
        try std.testing.expectEqual(eperm, call(arch, "ioctl", .{ 0, 0xffff_ffff_0000_0000 | TIOCSTI, 0, 0, 0, 0 }));
        try std.testing.expectEqual(eperm, call(arch, "ioctl", .{ 0, TIOCLINUX, 0, 0, 0, 0 }));
        try std.testing.expectEqual(RET_ALLOW, call(arch, "ioctl", .{ 0, 0x5401, 0, 0, 0, 0 })); // TCGETS
    }
}

test "foreign architectures are killed, x32 numbers refused" {
    const audit_i386 = 0x40000003;
    const audit_arm = 0x40000028;
    for ([_]u32{ audit_i386, audit_arm, Arch.aarch64.audit() }) |audit|
        try std.testing.expectEqual(RET_KILL_PROCESS, runOn(&filters[@intFromEnum(Arch.x86_64)], audit, 1, zero).ret);
    for ([_]u32{ audit_i386, audit_arm, Arch.x86_64.audit() }) |audit|
        try std.testing.expectEqual(RET_KILL_PROCESS, runOn(&filters[@intFromEnum(Arch.aarch64)], audit, 1, zero).ret);
    // x32: x86_64's numbers with bit 30 set, its own calls from 512.
    for ([_]u32{ 0, 1, 59, 512, 545 }) |k|
        try std.testing.expectEqual(enosys, run(.x86_64, 0x40000000 | k, zero).ret);
}
