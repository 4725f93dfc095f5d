//! What the FreeBSD backend hands the kernel, decided without a FreeBSD kernel:
//! jail_set(2)/nmount(2) parameter lists (the iovec name/value protocol), RCTL rule strings,
//! devfs rule records, interface alias requests, rlimit translation, the PATH search and the
//! status-line texts. It compiles and is unit-tested on any host (`zig build test` on Linux);
//! freebsd.zig feeds its results to the real system calls.
//!
//! Layouts and constants were taken from the FreeBSD 14 headers shipped with Zig 0.15.2
//! (lib/libc/include/generic-freebsd) by compiling a probe for x86_64- and aarch64-freebsd.14.0;
//! the sizes are checked at compile time below.
const std = @import("std");
const errtext = @import("errtext.zig");

/// errno numbers of the host that runs this code: FreeBSD's in the library, Linux's in tests.
pub const E = std.posix.E;
pub fn errnoCode(e: E) u16 {
    return @intFromEnum(e);
}

// ---------------------------------------------------------------------------------------
// Constants from sys/jail.h, sys/mount.h, sys/procctl.h.

pub const JAIL_CREATE: c_int = 0x01;
pub const JAIL_ATTACH: c_int = 0x04;
/// FreeBSD 15.0+: return an owning descriptor in `desc`; the jail goes with its last close.
/// 14.x rejects any flag outside JAIL_SET_MASK (0x0f) with EINVAL before looking at params.
pub const JAIL_OWN_DESC: c_int = 0x80;
pub const JAIL_SYS_DISABLE: c_int = 0;

pub const MNT_RDONLY: c_int = 0x1;
pub const MNT_NOEXEC: c_int = 0x4;
pub const MNT_NOSUID: c_int = 0x8;
pub const MNT_FORCE: c_int = 0x80000;

pub const P_PID: c_int = 0;
pub const PROC_REAP_ACQUIRE: c_int = 2;
pub const PROC_PDEATHSIG_CTL: c_int = 11;
pub const PROC_NO_NEW_PRIVS_CTL: c_int = 19;
pub const PROC_NO_NEW_PRIVS_ENABLE: c_int = 1;

/// The devfs ruleset lightjail owns: installed by the shim itself (DEVFSIO_RADD), used both as
/// the devfs mount's `ruleset` and as the jail's `devfs_ruleset`. docs/freebsd.md lists it.
pub const devfs_ruleset: u16 = 6077;
/// The jail's securelevel: 3 (network secure mode). It only ratchets upward inside the jail.
pub const jail_securelevel: c_int = 3;
/// FreeBSD's MAXPATHLEN.
pub const path_max = 1024;

// ---------------------------------------------------------------------------------------
// Process identity: kern.proc.pid.<pid> (a struct kinfo_proc) and kern.boottime.

pub const CTL_KERN: c_int = 1;
pub const KERN_PROC: c_int = 14;
pub const KERN_PROC_PID: c_int = 1;
pub const KERN_BOOTTIME: c_int = 21;
/// KINFO_PROC_SIZE on every 64-bit FreeBSD (amd64, arm64), stable across 14 and 15: the
/// struct's size is part of the ABI. Offsets from sys/user.h (checked by compiling
/// offsetof() against FreeBSD 14's headers for x86_64 and aarch64).
pub const kinfo_proc_size = 1088;
const ki_structsize_off = 0;
const ki_pid_off = 72;
const ki_start_off = 336;

/// The start time of a process in microseconds since boot, from its kinfo_proc and
/// kern.boottime (both `struct timeval`: i64 seconds, i64 microseconds). ki_start is wall
/// clock (the kernel adds boottime to the uptime-based start), and boottime moves when the
/// clock is stepped; subtracting it gives back the uptime-based start, which never changes.
/// Null when the record is not the expected struct or names another process.
pub fn procStartMicros(kp: []const u8, pid: i32, boottime: [2]i64) ?u64 {
    if (kp.len < kinfo_proc_size) return null;
    if (std.mem.readInt(i32, kp[ki_structsize_off..][0..4], .little) != kinfo_proc_size) return null;
    if (std.mem.readInt(i32, kp[ki_pid_off..][0..4], .little) != pid) return null;
    const sec = std.mem.readInt(i64, kp[ki_start_off..][0..8], .little);
    const usec = std.mem.readInt(i64, kp[ki_start_off + 8 ..][0..8], .little);
    const us = (sec - boottime[0]) * std.time.us_per_s + (usec - boottime[1]);
    return if (us < 0) null else @intCast(us);
}

// ---------------------------------------------------------------------------------------
// The iovec name/value protocol shared by jail_set(2), jail_get(2) and nmount(2).

/// `struct iovec` (identical on every 64-bit FreeBSD target and on the test host).
pub const Iovec = extern struct {
    base: ?*const anyopaque,
    len: usize,
};

/// A fixed-capacity parameter list. Element 2k is a name (with its NUL counted), element 2k+1
/// its value. Integers and formatted strings live inside the list itself, so a list must stay
/// where it was filled (take it by pointer, never copy it after adding).
pub fn IovList(comptime max_params: usize) type {
    return struct {
        const Self = @This();
        iov: [max_params * 2]Iovec = undefined,
        n: usize = 0,
        ints: [max_params]c_int = undefined,
        nints: usize = 0,
        text: [max_params * 24]u8 = undefined,
        ntext: usize = 0,
        overflow: bool = false,

        fn push(self: *Self, name: [:0]const u8, base: ?*const anyopaque, len: usize) void {
            if (self.n + 2 > self.iov.len) {
                self.overflow = true;
                return;
            }
            self.iov[self.n] = .{ .base = name.ptr, .len = name.len + 1 };
            self.iov[self.n + 1] = .{ .base = base, .len = len };
            self.n += 2;
        }
        /// A string value: NUL-terminated, its length counts the NUL.
        pub fn str(self: *Self, name: [:0]const u8, value: [:0]const u8) void {
            self.push(name, value.ptr, value.len + 1);
        }
        /// An integer value: a native int, exactly 4 bytes (the kernel checks the size).
        pub fn int(self: *Self, name: [:0]const u8, value: c_int) void {
            if (self.nints == self.ints.len) {
                self.overflow = true;
                return;
            }
            self.ints[self.nints] = value;
            self.push(name, &self.ints[self.nints], @sizeOf(c_int));
            self.nints += 1;
        }
        /// A decimal number as a string value (nmount options such as `size` and `ruleset`).
        pub fn num(self: *Self, name: [:0]const u8, value: u64) void {
            const room = self.text[self.ntext..];
            const s = std.fmt.bufPrintZ(room, "{d}", .{value}) catch {
                self.overflow = true;
                return;
            };
            self.ntext += s.len + 1;
            self.str(name, s);
        }
        /// A boolean: the name sets it, the `no` form clears it (`allow.noraw_sockets`).
        pub fn flag(self: *Self, comptime name: [:0]const u8, on: bool) void {
            self.push(if (on) name else comptime noForm(name), null, 0);
        }
        /// Raw bytes (address arrays).
        pub fn bytes(self: *Self, name: [:0]const u8, value: []const u8) void {
            self.push(name, value.ptr, value.len);
        }
        /// The `errmsg` pseudo-parameter: the kernel writes a readable reason into `buf`.
        pub fn errmsg(self: *Self, buf: []u8) void {
            @memset(buf, 0);
            self.push("errmsg", buf.ptr, buf.len);
        }
        pub fn slice(self: *Self) []Iovec {
            return self.iov[0..self.n];
        }
        pub fn reset(self: *Self) void {
            self.* = .{};
        }
    };
}

/// "persist" -> "nopersist", "allow.mount.nullfs" -> "allow.mount.nonullfs".
pub fn noForm(comptime name: [:0]const u8) [:0]const u8 {
    const dot = comptime std.mem.lastIndexOfScalar(u8, name, '.');
    return comptime if (dot) |d| name[0 .. d + 1] ++ "no" ++ name[d + 1 ..] else "no" ++ name;
}

/// allow.* permissions present in every FreeBSD 14 kernel: always set to their `no` form, so
/// the jail's rights never depend on host sysctls. allow.suser stays as inherited: the payload
/// drops from root to its uid only after jail_attach, which needs root's privilege inside.
pub const allow_off_core = [_][:0]const u8{
    "allow.set_hostname", "allow.sysvipc",                 "allow.raw_sockets",
    "allow.chflags",      "allow.mount",                   "allow.quotas",
    "allow.socket_af",    "allow.mlock",                   "allow.reserved_ports",
    "allow.read_msgbuf",  "allow.unprivileged_proc_debug",
};

/// allow.* permissions that exist only with a module loaded or on newer kernels: set to `no`
/// when `security.jail.param.<name>` exists (an unknown name fails jail_set with EINVAL).
/// Kernel defaults keep them off for new jails anyway.
pub const allow_off_optional = [_][:0]const u8{
    "allow.mount.devfs",  "allow.mount.fdescfs",                 "allow.mount.nullfs",
    "allow.mount.procfs", "allow.mount.linprocfs",               "allow.mount.linsysfs",
    "allow.mount.tmpfs",  "allow.mount.zfs",                     "allow.mount.fusefs",
    "allow.vmm",          "allow.nfsd",                          "allow.extattr",
    "allow.adjtime",      "allow.settime",                       "allow.routing",
    "allow.setaudit",     "allow.unprivileged_parent_tampering",
};

pub const JailConfig = struct {
    path: [:0]const u8,
    name: [:0]const u8,
    hostname: [:0]const u8,
    /// `struct in_addr` array, network byte order, primary address first.
    ip4: []const [4]u8 = &.{},
    ip6: []const [16]u8 = &.{},
    /// FreeBSD 15+: ask for an owning descriptor (written into `desc`).
    desc: ?*c_int = null,
};

pub const JailParams = IovList(64);

/// The full jail_set(2) parameter list for one ephemeral jail. `known` says whether an
/// optional parameter exists on the running kernel.
pub fn jailParams(p: *JailParams, cfg: JailConfig, known: *const fn ([:0]const u8) bool, errbuf: []u8) void {
    p.reset();
    p.str("path", cfg.path);
    p.str("name", cfg.name);
    p.str("host.hostname", cfg.hostname);
    // Created without attaching: the kernel refuses a process-less jail without persist.
    p.flag("persist", true);
    p.int("enforce_statfs", 2);
    p.int("children.max", 0);
    p.int("securelevel", jail_securelevel);
    p.int("devfs_ruleset", devfs_ruleset);
    // Networking is never inherited from the host: addresses or nothing.
    if (cfg.ip4.len > 0) p.bytes("ip4.addr", std.mem.sliceAsBytes(cfg.ip4)) else p.int("ip4", JAIL_SYS_DISABLE);
    if (cfg.ip6.len > 0) p.bytes("ip6.addr", std.mem.sliceAsBytes(cfg.ip6)) else p.int("ip6", JAIL_SYS_DISABLE);
    // SysV IPC: `allow.nosysvipc` below is enough. A new jail's sysvmsg/sysvsem/sysvshm default
    // to "disable" unless allow.sysvipc is set, and their security.jail.param nodes cannot be
    // probed like the boolean parameters (sysctl answers EISDIR for a node).
    inline for (allow_off_core) |name| p.flag(name, false);
    inline for (allow_off_optional) |name| if (known(name)) p.flag(name, false);
    if (cfg.desc) |d| {
        d.* = -1;
        p.push("desc", d, @sizeOf(c_int));
    }
    p.errmsg(errbuf);
}

/// Jail names are the RCTL subject and must be unambiguous: no dots (hierarchy), not numeric
/// (a number means a jid), no ':' (the RCTL rule separator) and short enough for MAXHOSTNAMELEN.
pub fn checkJailName(name: []const u8) ?[]const u8 {
    if (name.len == 0) return "is empty";
    if (name.len > 255) return "is longer than 255 bytes";
    if (std.mem.indexOfScalar(u8, name, '.') != null) return "contains '.' (dots name child jails)";
    if (std.mem.indexOfAny(u8, name, ":/ \t\n") != null) return "contains ':', '/' or whitespace";
    for (name) |ch| {
        if (!std.ascii.isDigit(ch)) return null;
    }
    return "is a number (numbers are jail ids)";
}

// ---------------------------------------------------------------------------------------
// nmount(2) option lists.

pub const MountParams = IovList(12);

pub const MountKind = enum { nullfs, unionfs, devfs, tmpfs };

pub const MountSpec = struct {
    kind: MountKind,
    fspath: [:0]const u8,
    /// nullfs: the source directory; unionfs: the layer mounted over fspath.
    from: ?[:0]const u8 = null,
    readonly: bool = false,
    /// tmpfs: size cap in bytes (0 = none) and mode.
    size: u64 = 0,
    mode: u16 = 0o755,
    /// devfs: the ruleset applied to the mount.
    ruleset: u16 = devfs_ruleset,

    pub fn flags(m: MountSpec) c_int {
        var f: c_int = MNT_NOSUID;
        if (m.readonly) f |= MNT_RDONLY;
        return f;
    }
};

pub fn mountParams(p: *MountParams, m: MountSpec, errbuf: []u8) void {
    p.reset();
    p.str("fstype", @tagName(m.kind));
    p.str("fspath", m.fspath);
    switch (m.kind) {
        // mount_nullfs(8) passes the source as "target" (newer kernels also accept "from").
        .nullfs => p.str("target", m.from.?),
        .unionfs => {
            p.str("from", m.from.?);
            // Copied-up files keep their owner and mode; whiteouts only where a lower has the name.
            p.str("copymode", "transparent");
            p.str("whiteout", "whenneeded");
        },
        .devfs => p.num("ruleset", m.ruleset),
        .tmpfs => {
            var mode: [8]u8 = undefined;
            const ms = std.fmt.bufPrint(&mode, "{o}", .{m.mode}) catch unreachable;
            const room = p.text[p.ntext..];
            @memcpy(room[0..ms.len], ms);
            room[ms.len] = 0;
            p.ntext += ms.len + 1;
            p.str("mode", room[0..ms.len :0]);
            if (m.size > 0) p.num("size", m.size);
        },
    }
    p.errmsg(errbuf);
}

// ---------------------------------------------------------------------------------------
// RCTL rules: "jail:NAME:resource:deny=amount", plain numbers (the syscall takes no units).

pub const Limits = struct { memory_bytes_max: u64 = 0, pids_max: u64 = 0, cpu_millis: u64 = 0 };
pub const Rule = struct { resource: []const u8, amount: u64 };

/// cpu_millis are thousandths of one CPU (1000 = one full CPU, as the Linux cgroup quota);
/// pcpu is a percentage of one CPU. Rounded up so a tiny share never becomes "no limit".
pub fn pcpuFromMillis(millis: u64) u64 {
    return @max(1, (millis + 9) / 10);
}

/// The rules for the limits, in the order they are added.
pub fn rctlRules(l: Limits, out: *[3]Rule) []const Rule {
    var n: usize = 0;
    if (l.memory_bytes_max > 0) {
        out[n] = .{ .resource = "memoryuse", .amount = l.memory_bytes_max };
        n += 1;
    }
    if (l.pids_max > 0) {
        out[n] = .{ .resource = "maxproc", .amount = l.pids_max };
        n += 1;
    }
    if (l.cpu_millis > 0) {
        out[n] = .{ .resource = "pcpu", .amount = pcpuFromMillis(l.cpu_millis) };
        n += 1;
    }
    return out[0..n];
}

pub fn rctlRule(buf: []u8, name: []const u8, r: Rule) ![:0]const u8 {
    return std.fmt.bufPrintZ(buf, "jail:{s}:{s}:deny={d}", .{ name, r.resource, r.amount });
}

/// The filter that removes every rule of one resource for the jail (fields left out match all).
pub fn rctlFilter(buf: []u8, name: []const u8, resource: []const u8) ![:0]const u8 {
    return std.fmt.bufPrintZ(buf, "jail:{s}:{s}", .{ name, resource });
}

// ---------------------------------------------------------------------------------------
// devfs rules (fs/devfs/devfs.h), installed with DEVFSIO_RADD on the jail's devfs mount.

pub const DEVFS_MAGIC: u32 = 0xdb0a087a;
pub const DRC_PATHPTRN: c_int = 0x002;
pub const DRA_BACTS: c_int = 0x001;
pub const DRB_HIDE: c_int = 0x001;
pub const DRB_UNHIDE: c_int = 0x002;
pub const DEVFSIO_RADD: c_ulong = 0xc0ec4400; // _IOWR('D', 0, struct devfs_rule)
pub const DEVFSIO_SAPPLY: c_ulong = 0x8002440b; // _IOW('D', 11, devfs_rsnum)

pub const DevfsRule = extern struct {
    magic: u32 = DEVFS_MAGIC,
    id: u32,
    icond: c_int = 0,
    dswflags: c_int = 0,
    pathptrn: [200]u8 = [_]u8{0} ** 200,
    iacts: c_int = DRA_BACTS,
    bacts: c_int,
    uid: u32 = 0,
    gid: u32 = 0,
    mode: u16 = 0,
    incset: u16 = 0,
};

comptime {
    std.debug.assert(@sizeOf(DevfsRule) == 236);
    std.debug.assert(@offsetOf(DevfsRule, "iacts") == 216);
    std.debug.assert(@offsetOf(DevfsRule, "mode") == 232);
    std.debug.assert(ioc(.inout, 'D', 0, @sizeOf(DevfsRule)) == DEVFSIO_RADD);
    std.debug.assert(ioc(.in, 'D', 11, 2) == DEVFSIO_SAPPLY);
}

/// Everything hidden, then only what a process needs: the null/zero/random devices, its own
/// descriptors, and ptys (devfs shows a jail only the ptys it created).
pub const devfs_unhide = [_][]const u8{
    "null", "zero", "random", "urandom", "fd", "fd/*", "stdin", "stdout", "stderr", "ptmx", "pts", "pts/*",
};
pub const devfs_rule_count = 1 + devfs_unhide.len;

pub fn devfsRules(ruleset: u16) [devfs_rule_count]DevfsRule {
    var rules: [devfs_rule_count]DevfsRule = undefined;
    // mkrid(rsnum, rnum): the ruleset in the high 16 bits; rules numbered 100, 200, ...
    rules[0] = .{ .id = (@as(u32, ruleset) << 16) | 100, .bacts = DRB_HIDE };
    for (devfs_unhide, 1..) |pat, i| {
        var r = DevfsRule{ .id = (@as(u32, ruleset) << 16) | @as(u32, @intCast((i + 1) * 100)), .icond = DRC_PATHPTRN, .bacts = DRB_UNHIDE };
        @memcpy(r.pathptrn[0..pat.len], pat);
        rules[i] = r;
    }
    return rules;
}

// ---------------------------------------------------------------------------------------
// Interface aliases (SIOCAIFADDR / SIOCDIFADDR and their IPv6 forms).

const IocDir = enum(u32) { in = 0x80000000, inout = 0xc0000000 };
fn ioc(dir: IocDir, group: u8, num_: u8, len: usize) c_ulong {
    return @intFromEnum(dir) | (@as(c_ulong, @intCast(len & 0x1fff)) << 16) | (@as(c_ulong, group) << 8) | num_;
}

pub const IFNAMSIZ = 16;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 28;

pub const SockaddrIn = extern struct {
    len: u8 = @sizeOf(SockaddrIn),
    family: u8 = AF_INET,
    port: u16 = 0,
    addr: [4]u8 = .{ 0, 0, 0, 0 },
    zero: [8]u8 = [_]u8{0} ** 8,
};
pub const SockaddrIn6 = extern struct {
    len: u8 = @sizeOf(SockaddrIn6),
    family: u8 = AF_INET6,
    port: u16 = 0,
    flowinfo: u32 = 0,
    addr: [16]u8 = [_]u8{0} ** 16,
    scope_id: u32 = 0,
};
pub const InAliasreq = extern struct {
    name: [IFNAMSIZ]u8 = [_]u8{0} ** IFNAMSIZ,
    addr: SockaddrIn = .{},
    broadaddr: SockaddrIn = .{},
    mask: SockaddrIn = .{},
    vhid: c_int = 0,
};
pub const Ifreq = extern struct {
    name: [IFNAMSIZ]u8 = [_]u8{0} ** IFNAMSIZ,
    addr: SockaddrIn = .{},
};
pub const In6Addrlifetime = extern struct { expire: i64 = 0, preferred: i64 = 0, vltime: u32, pltime: u32 };
pub const In6Aliasreq = extern struct {
    name: [IFNAMSIZ]u8 = [_]u8{0} ** IFNAMSIZ,
    addr: SockaddrIn6 = .{},
    dstaddr: SockaddrIn6 = .{ .len = 0, .family = 0 },
    prefixmask: SockaddrIn6 = .{},
    flags: c_int = 0,
    lifetime: In6Addrlifetime,
    vhid: c_int = 0,
};
pub const In6Ifreq = extern struct {
    name: [IFNAMSIZ]u8 = [_]u8{0} ** IFNAMSIZ,
    addr: SockaddrIn6 = .{},
    // The rest of the kernel's union (interface statistics); never read.
    rest: [288 - IFNAMSIZ - @sizeOf(SockaddrIn6)]u8 = [_]u8{0} ** (288 - IFNAMSIZ - @sizeOf(SockaddrIn6)),
};
pub const ND6_INFINITE_LIFETIME: u32 = 0xffffffff;

pub const SIOCAIFADDR: c_ulong = 0x8044692b;
pub const SIOCDIFADDR: c_ulong = 0x80206919;
pub const SIOCAIFADDR_IN6: c_ulong = 0x8088691b;
pub const SIOCDIFADDR_IN6: c_ulong = 0x81206919;

comptime {
    std.debug.assert(@sizeOf(SockaddrIn) == 16 and @sizeOf(SockaddrIn6) == 28);
    std.debug.assert(@sizeOf(InAliasreq) == 68 and @offsetOf(InAliasreq, "mask") == 48 and @offsetOf(InAliasreq, "vhid") == 64);
    std.debug.assert(@sizeOf(Ifreq) == 32);
    std.debug.assert(@sizeOf(In6Addrlifetime) == 24);
    std.debug.assert(@offsetOf(In6Aliasreq, "flags") == 100 and @offsetOf(In6Aliasreq, "lifetime") == 104);
    std.debug.assert(@offsetOf(In6Aliasreq, "vhid") == 128 and @sizeOf(In6Aliasreq) == 136);
    std.debug.assert(@sizeOf(In6Ifreq) == 288);
    std.debug.assert(ioc(.in, 'i', 43, @sizeOf(InAliasreq)) == SIOCAIFADDR);
    std.debug.assert(ioc(.in, 'i', 25, @sizeOf(Ifreq)) == SIOCDIFADDR);
    std.debug.assert(ioc(.in, 'i', 27, @sizeOf(In6Aliasreq)) == SIOCAIFADDR_IN6);
    std.debug.assert(ioc(.in, 'i', 25, @sizeOf(In6Ifreq)) == SIOCDIFADDR_IN6);
}

pub const Alias = union(enum) {
    v4: [4]u8,
    v6: [16]u8,
};

/// Whether a `struct sockaddr` (from getifaddrs) holds this address: sockaddr_in keeps it at
/// offset 4, sockaddr_in6 at offset 8 (after the port and the flow info).
pub fn sockaddrIs(sa: [*]const u8, a: Alias) bool {
    return switch (a) {
        .v4 => |v| sa[1] == AF_INET and std.mem.eql(u8, sa[4..8], &v),
        .v6 => |v| sa[1] == AF_INET6 and std.mem.eql(u8, sa[8..24], &v),
    };
}

fn ifname(dst: *[IFNAMSIZ]u8, iface: []const u8) void {
    const n = @min(iface.len, IFNAMSIZ - 1);
    @memcpy(dst[0..n], iface[0..n]);
}

pub fn checkIface(iface: []const u8) ?[]const u8 {
    if (iface.len == 0) return "is empty";
    if (iface.len >= IFNAMSIZ) return "is longer than 15 bytes";
    return null;
}

/// A host alias (/32) for a jail address.
pub fn aliasAdd4(iface: []const u8, addr: [4]u8) InAliasreq {
    var r = InAliasreq{};
    ifname(&r.name, iface);
    r.addr.addr = addr;
    r.mask.addr = .{ 255, 255, 255, 255 };
    r.broadaddr = .{ .len = 0, .family = 0 };
    return r;
}
pub fn aliasDel4(iface: []const u8, addr: [4]u8) Ifreq {
    var r = Ifreq{};
    ifname(&r.name, iface);
    r.addr.addr = addr;
    return r;
}
/// A host alias (/128) for a jail address, valid forever.
pub fn aliasAdd6(iface: []const u8, addr: [16]u8) In6Aliasreq {
    var r = In6Aliasreq{ .lifetime = .{ .vltime = ND6_INFINITE_LIFETIME, .pltime = ND6_INFINITE_LIFETIME } };
    ifname(&r.name, iface);
    r.addr.addr = addr;
    r.prefixmask.addr = [_]u8{0xff} ** 16;
    return r;
}
pub fn aliasDel6(iface: []const u8, addr: [16]u8) In6Ifreq {
    var r = In6Ifreq{};
    ifname(&r.name, iface);
    r.addr.addr = addr;
    return r;
}

// ---------------------------------------------------------------------------------------
// rlimits: the spec carries Linux resource numbers (src/jail/spec.ts); FreeBSD numbers differ.

pub const RLIM_INFINITY: i64 = std.math.maxInt(i64);

/// Linux RLIMIT_* -> FreeBSD RLIMIT_*, or null for a resource FreeBSD does not have.
pub fn rlimitResource(linux_resource: u32) ?c_int {
    return switch (linux_resource) {
        0 => 0, // cpu
        1 => 1, // fsize
        2 => 2, // data
        3 => 3, // stack
        4 => 4, // core
        5 => 5, // rss
        6 => 7, // nproc
        7 => 8, // nofile
        8 => 6, // memlock
        9 => 10, // as (FreeBSD RLIMIT_VMEM / RLIMIT_AS)
        else => null,
    };
}

/// rlim_t is signed on FreeBSD; Linux's all-ones "infinity" and anything above maps to it.
pub fn rlimitValue(v: u64) i64 {
    return if (v >= @as(u64, @intCast(RLIM_INFINITY))) RLIM_INFINITY else @intCast(v);
}

// ---------------------------------------------------------------------------------------
// Status lines and error texts.

pub const status_exit = 'X';
pub const status_signal = 'S';
pub const status_error = 'E';

/// FreeBSD wait status: WIFEXITED when the low 7 bits are 0, WIFSIGNALED when they are
/// neither 0 nor 0x7f (stopped).
pub const End = union(enum) { exited: u8, signaled: u8 };

pub fn decodeWait(status: i32) End {
    const low: u8 = @intCast(status & 0x7f);
    if (low == 0) return .{ .exited = @intCast((status >> 8) & 0xff) };
    return .{ .signaled = low };
}

pub fn endLine(buf: []u8, end: End) []const u8 {
    return switch (end) {
        .exited => |c| std.fmt.bufPrint(buf, "{c} {d}\n", .{ status_exit, c }) catch unreachable,
        .signaled => |s| std.fmt.bufPrint(buf, "{c} {d}\n", .{ status_signal, s }) catch unreachable,
    };
}

/// "E <errno> <text>\n"; the text is cut to fit, the line always ends with a newline.
pub fn errorLine(buf: []u8, errno: u16, text: []const u8) []const u8 {
    std.debug.assert(buf.len >= 16);
    var w = std.Io.Writer.fixed(buf[0 .. buf.len - 1]);
    w.print("{c} {d} ", .{ status_error, errno }) catch unreachable;
    for (text) |ch| w.writeByte(if (ch == '\n') ' ' else ch) catch break;
    const n = w.end;
    buf[n] = '\n';
    return buf[0 .. n + 1];
}

/// A failure text: "<what>: E<NAME>[: <kernel errmsg>][ (<hint>)]".
pub const Failure = struct {
    errno: u16 = 0,
    buf: [600]u8 = undefined,
    len: usize = 0,

    pub fn text(f: *const Failure) []const u8 {
        return f.buf[0..f.len];
    }

    pub fn set(f: *Failure, errno: u16, comptime fmt: []const u8, args: anytype, kernel_msg: []const u8) void {
        f.errno = errno;
        const head = errtext.format(&f.buf, errno, fmt, args);
        var w = std.Io.Writer.fixed(f.buf[0 .. f.buf.len - 1]);
        w.end = head.len;
        const msg = std.mem.sliceTo(kernel_msg, 0);
        if (msg.len > 0) w.print(": {s}", .{msg}) catch {};
        if (hint(errno, fmt)) |h| w.print(" ({s})", .{h}) catch {};
        f.len = w.end;
        f.buf[f.len] = 0;
    }
};

/// Advice for the failures an operator can fix.
fn hint(errno: u16, comptime step: []const u8) ?[]const u8 {
    if (comptime std.mem.startsWith(u8, step, "add RCTL rule")) {
        if (errno == errnoCode(.NOSYS)) return "RACCT/RCTL is disabled: set kern.racct.enable=1 in /boot/loader.conf and reboot";
    }
    if (errno == errnoCode(.PERM)) return "lightjail's FreeBSD backend must run as root";
    return null;
}

// ---------------------------------------------------------------------------------------
// PATH search (execvp semantics, from the payload's own environment).

pub const default_path = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin";

pub fn pathOf(env: []const [*:0]const u8) []const u8 {
    var search: []const u8 = default_path;
    for (env) |kv| {
        const s = std.mem.span(kv);
        if (std.mem.startsWith(u8, s, "PATH=")) search = s[5..];
    }
    return search;
}

/// Candidates for `file`: the name itself when it contains a slash, else DIR/file per PATH entry.
pub const PathIter = struct {
    file: []const u8,
    dirs: std.mem.SplitIterator(u8, .scalar),
    direct: bool,
    done: bool = false,

    pub fn init(file: []const u8, search: []const u8) PathIter {
        return .{ .file = file, .dirs = std.mem.splitScalar(u8, search, ':'), .direct = std.mem.indexOfScalar(u8, file, '/') != null };
    }
    pub fn next(it: *PathIter, buf: []u8) ?[:0]const u8 {
        if (it.done or it.file.len == 0) return null;
        if (it.direct) {
            it.done = true;
            return std.fmt.bufPrintZ(buf, "{s}", .{it.file}) catch null;
        }
        while (it.dirs.next()) |dir| {
            const d = if (dir.len == 0) "." else dir;
            return std.fmt.bufPrintZ(buf, "{s}/{s}", .{ d, it.file }) catch continue;
        }
        return null;
    }
};

// ---------------------------------------------------------------------------------------
// Tests (run on the build host; no FreeBSD kernel involved).

const testing = std.testing;

/// Renders a parameter list as "name=value" words, for assertions: strings as text, 4-byte
/// values as native ints, empty values as bare names, other values as hex.
pub fn renderIov(iov: []const Iovec, out: []u8) []const u8 {
    var w = std.Io.Writer.fixed(out);
    var i: usize = 0;
    while (i + 1 < iov.len) : (i += 2) {
        const np: [*]const u8 = @ptrCast(iov[i].base.?);
        const name = np[0..iov[i].len];
        if (i > 0) w.writeByte(' ') catch {};
        w.writeAll(name[0 .. name.len - 1]) catch {};
        const v = iov[i + 1];
        if (v.len == 0) continue;
        const vp: [*]const u8 = @ptrCast(v.base.?);
        const val = vp[0..v.len];
        w.writeByte('=') catch {};
        if (std.mem.eql(u8, name, "errmsg\x00")) {
            w.print("<{d}>", .{v.len}) catch {};
        } else if (val[val.len - 1] == 0 and std.mem.indexOfScalar(u8, val[0 .. val.len - 1], 0) == null and val.len > 1) {
            w.writeAll(val[0 .. val.len - 1]) catch {};
        } else if (v.len == 4 and !std.mem.endsWith(u8, name, ".addr\x00")) {
            w.print("{d}", .{std.mem.bytesToValue(c_int, val[0..4])}) catch {};
        } else {
            w.print("{x}", .{val}) catch {};
        }
    }
    return w.buffered();
}

fn knowNone(_: [:0]const u8) bool {
    return false;
}
fn knowNullfsAndVmm(name: [:0]const u8) bool {
    return std.mem.eql(u8, name, "allow.mount.nullfs") or std.mem.eql(u8, name, "allow.vmm") or std.mem.eql(u8, name, "sysvshm");
}

test "noForm puts no after the last dot" {
    try testing.expectEqualStrings("nopersist", noForm("persist"));
    try testing.expectEqualStrings("allow.noraw_sockets", noForm("allow.raw_sockets"));
    try testing.expectEqualStrings("allow.mount.nonullfs", noForm("allow.mount.nullfs"));
}

test "jail parameters: strings, native ints, boolean no forms, disabled networking, errmsg" {
    var p: JailParams = .{};
    var errbuf: [128]u8 = undefined;
    jailParams(&p, .{ .path = "/lj/run/a/root", .name = "lj-a", .hostname = "box" }, &knowNone, &errbuf);
    try testing.expect(!p.overflow);
    var out: [2048]u8 = undefined;
    const want = "path=/lj/run/a/root name=lj-a host.hostname=box persist enforce_statfs=2 children.max=0 " ++
        "securelevel=3 devfs_ruleset=6077 ip4=0 ip6=0 " ++
        "allow.noset_hostname allow.nosysvipc allow.noraw_sockets allow.nochflags allow.nomount " ++
        "allow.noquotas allow.nosocket_af allow.nomlock allow.noreserved_ports allow.noread_msgbuf " ++
        "allow.nounprivileged_proc_debug errmsg=<128>";
    try testing.expectEqualStrings(want, renderIov(p.slice(), &out));

    // Byte-level checks of the protocol: name lengths count the NUL, ints are exactly 4 bytes,
    // booleans carry no value, errmsg points at the zeroed caller buffer.
    const iov = p.slice();
    try testing.expectEqual(@as(usize, 5), iov[0].len); // "path\0"
    try testing.expectEqual(@as(usize, "/lj/run/a/root".len + 1), iov[1].len);
    try testing.expectEqual(@as(usize, 4), iov[9].len); // enforce_statfs value
    try testing.expectEqual(@as(c_int, 2), @as(*const c_int, @ptrCast(@alignCast(iov[9].base.?))).*);
    try testing.expectEqual(@as(usize, 0), iov[7].len); // persist
    try testing.expectEqual(@as(?*const anyopaque, null), iov[7].base);
    const last = iov[iov.len - 1];
    try testing.expectEqual(@intFromPtr(&errbuf), @intFromPtr(last.base.?));
    try testing.expectEqual(@as(u8, 0), errbuf[0]);
    try testing.expectEqual(@as(usize, 0), p.n % 2);
    // allow.suser must never be cleared: the payload needs root inside to drop to its uid.
    try testing.expect(std.mem.indexOf(u8, renderIov(p.slice(), &out), "suser") == null);
}

test "jail parameters: address arrays in network byte order, optional allow names, desc" {
    var p: JailParams = .{};
    var errbuf: [64]u8 = undefined;
    const v4 = [_][4]u8{ .{ 10, 0, 0, 1 }, .{ 192, 168, 1, 11 } };
    var v6 = [_][16]u8{[_]u8{0} ** 16};
    v6[0][0] = 0xfd;
    v6[0][15] = 1;
    var desc: c_int = 1234;
    jailParams(&p, .{ .path = "/r", .name = "n", .hostname = "h", .ip4 = &v4, .ip6 = &v6, .desc = &desc }, &knowNullfsAndVmm, &errbuf);
    var out: [2048]u8 = undefined;
    const r = renderIov(p.slice(), &out);
    try testing.expect(std.mem.indexOf(u8, r, "ip4.addr=0a000001c0a8010b ") != null);
    try testing.expect(std.mem.indexOf(u8, r, "ip6.addr=fd000000000000000000000000000001 ") != null);
    try testing.expect(std.mem.indexOf(u8, r, " ip4=") == null and std.mem.indexOf(u8, r, " ip6=") == null);
    try testing.expect(std.mem.indexOf(u8, r, "allow.mount.nonullfs allow.novmm desc=-1 errmsg=<64>") != null);
    // Never the sysv* parameters, even where the probe says they exist: allow.nosysvipc covers them.
    try testing.expect(std.mem.indexOf(u8, r, " ip6.addr=fd000000000000000000000000000001 allow.noset_hostname") != null);
    try testing.expectEqual(@as(usize, 1), std.mem.count(u8, r, "sysv")); // allow.nosysvipc
    try testing.expect(std.mem.indexOf(u8, r, "allow.mount.notmpfs") == null);
    try testing.expectEqual(@as(c_int, -1), desc);
    // The address value points straight at the caller's array: 4 bytes per address.
    for (p.slice(), 0..) |v, i| {
        if (i % 2 == 0 and v.len == "ip4.addr".len + 1 and std.mem.eql(u8, @as([*]const u8, @ptrCast(v.base.?))[0..8], "ip4.addr"))
            try testing.expectEqual(@as(usize, 8), p.slice()[i + 1].len);
    }
}

test "parameter lists report overflow instead of writing past the end" {
    var p: IovList(2) = .{};
    p.int("a", 1);
    p.int("b", 2);
    try testing.expect(!p.overflow);
    p.int("c", 3);
    try testing.expect(p.overflow);
    try testing.expectEqual(@as(usize, 4), p.n);
}

test "jail names" {
    try testing.expect(checkJailName("lj-7f3a") == null);
    try testing.expect(checkJailName("") != null);
    try testing.expect(checkJailName("a.b") != null);
    try testing.expect(checkJailName("12345") != null);
    try testing.expect(checkJailName("a:b") != null);
    try testing.expect(checkJailName("a/b") != null);
}

test "nmount option lists" {
    var p: MountParams = .{};
    var errbuf: [256]u8 = undefined;
    var out: [1024]u8 = undefined;

    const world = MountSpec{ .kind = .nullfs, .fspath = "/s/root", .from = "/lj/worlds/14.1-RELEASE", .readonly = true };
    mountParams(&p, world, &errbuf);
    try testing.expectEqualStrings("fstype=nullfs fspath=/s/root target=/lj/worlds/14.1-RELEASE errmsg=<256>", renderIov(p.slice(), &out));
    try testing.expectEqual(MNT_RDONLY | MNT_NOSUID, world.flags());

    const layer = MountSpec{ .kind = .unionfs, .fspath = "/s/root", .from = "/lj/languages/x", .readonly = true };
    mountParams(&p, layer, &errbuf);
    try testing.expectEqualStrings("fstype=unionfs fspath=/s/root from=/lj/languages/x copymode=transparent whiteout=whenneeded errmsg=<256>", renderIov(p.slice(), &out));

    const upper = MountSpec{ .kind = .unionfs, .fspath = "/s/root", .from = "/s/upper" };
    try testing.expectEqual(MNT_NOSUID, upper.flags());

    mountParams(&p, .{ .kind = .devfs, .fspath = "/s/root/dev" }, &errbuf);
    try testing.expectEqualStrings("fstype=devfs fspath=/s/root/dev ruleset=6077 errmsg=<256>", renderIov(p.slice(), &out));

    mountParams(&p, .{ .kind = .tmpfs, .fspath = "/s/root/tmp", .mode = 0o1777, .size = 64 << 20 }, &errbuf);
    try testing.expectEqualStrings("fstype=tmpfs fspath=/s/root/tmp mode=1777 size=67108864 errmsg=<256>", renderIov(p.slice(), &out));
    mountParams(&p, .{ .kind = .tmpfs, .fspath = "/s/upper" }, &errbuf);
    try testing.expectEqualStrings("fstype=tmpfs fspath=/s/upper mode=755 errmsg=<256>", renderIov(p.slice(), &out));
}

test "RCTL rule strings: no unit suffixes, full subject, pcpu from millis" {
    var rules: [3]Rule = undefined;
    var buf: [128]u8 = undefined;
    const rs = rctlRules(.{ .memory_bytes_max = 512 << 20, .pids_max = 64, .cpu_millis = 1500 }, &rules);
    try testing.expectEqual(@as(usize, 3), rs.len);
    try testing.expectEqualStrings("jail:lj-a:memoryuse:deny=536870912", try rctlRule(&buf, "lj-a", rs[0]));
    try testing.expectEqualStrings("jail:lj-a:maxproc:deny=64", try rctlRule(&buf, "lj-a", rs[1]));
    try testing.expectEqualStrings("jail:lj-a:pcpu:deny=150", try rctlRule(&buf, "lj-a", rs[2]));
    try testing.expectEqualStrings("jail:lj-a:pcpu", try rctlFilter(&buf, "lj-a", "pcpu"));
    try testing.expectEqual(@as(usize, 0), rctlRules(.{}, &rules).len);
    const only_pids = rctlRules(.{ .pids_max = 5 }, &rules);
    try testing.expectEqual(@as(usize, 1), only_pids.len);
    try testing.expectEqualStrings("maxproc", only_pids[0].resource);
    try testing.expectEqual(@as(u64, 1), pcpuFromMillis(1));
    try testing.expectEqual(@as(u64, 100), pcpuFromMillis(1000));
    try testing.expectEqual(@as(u64, 26), pcpuFromMillis(251));
}

test "devfs rules: hide everything, then unhide a short list" {
    const rules = devfsRules(devfs_ruleset);
    try testing.expectEqual(@as(u32, (6077 << 16) | 100), rules[0].id);
    try testing.expectEqual(DRB_HIDE, rules[0].bacts);
    try testing.expectEqual(@as(c_int, 0), rules[0].icond);
    try testing.expectEqual(DEVFS_MAGIC, rules[1].magic);
    try testing.expectEqualStrings("null", std.mem.sliceTo(&rules[1].pathptrn, 0));
    try testing.expectEqual(DRC_PATHPTRN, rules[1].icond);
    try testing.expectEqual(DRB_UNHIDE, rules[1].bacts);
    try testing.expectEqual(@as(u32, (6077 << 16) | 200), rules[1].id);
    for (rules[1..]) |r| {
        const pat = std.mem.sliceTo(&r.pathptrn, 0);
        // Never a disk, memory or kernel device.
        for ([_][]const u8{ "mem", "kmem", "io", "ada", "da", "nvd", "zfs", "fuse", "pf", "bpf" }) |bad|
            try testing.expect(!std.mem.startsWith(u8, pat, bad));
    }
}

test "alias requests" {
    const a = aliasAdd4("lo1", .{ 10, 7, 0, 2 });
    try testing.expectEqualStrings("lo1", std.mem.sliceTo(&a.name, 0));
    try testing.expectEqual(@as(u8, 16), a.addr.len);
    try testing.expectEqual(AF_INET, a.addr.family);
    try testing.expectEqual([4]u8{ 10, 7, 0, 2 }, a.addr.addr);
    try testing.expectEqual([4]u8{ 255, 255, 255, 255 }, a.mask.addr);
    const bytes = std.mem.asBytes(&a);
    try testing.expectEqualSlices(u8, &.{ 16, 2, 0, 0, 10, 7, 0, 2 }, bytes[16..24]);
    const d = aliasDel4("lo0", .{ 10, 7, 0, 2 });
    try testing.expectEqualSlices(u8, &.{ 16, 2, 0, 0, 10, 7, 0, 2 }, std.mem.asBytes(&d)[16..24]);
    var v6 = [_]u8{0} ** 16;
    v6[0] = 0xfd;
    v6[15] = 9;
    const a6 = aliasAdd6("lo0", v6);
    try testing.expectEqual(AF_INET6, a6.addr.family);
    try testing.expectEqual(@as(u8, 28), a6.addr.len);
    try testing.expectEqual([_]u8{0xff} ** 16, a6.prefixmask.addr);
    try testing.expectEqual(ND6_INFINITE_LIFETIME, a6.lifetime.vltime);
    try testing.expectEqual(v6, aliasDel6("lo0", v6).addr.addr);
    try testing.expect(checkIface("lo0") == null);
    try testing.expect(checkIface("a-very-long-interface") != null);
}

test "a host address is recognised in getifaddrs' sockaddrs" {
    const in4 = SockaddrIn{ .family = AF_INET, .addr = .{ 192, 168, 1, 11 } };
    try testing.expect(sockaddrIs(@ptrCast(&in4), .{ .v4 = .{ 192, 168, 1, 11 } }));
    try testing.expect(!sockaddrIs(@ptrCast(&in4), .{ .v4 = .{ 192, 168, 1, 12 } }));
    var v6 = [_]u8{0} ** 16;
    v6[0] = 0xfd;
    v6[15] = 3;
    const a6 = aliasAdd6("lo0", v6);
    try testing.expect(sockaddrIs(@ptrCast(&a6.addr), .{ .v6 = v6 }));
    try testing.expect(!sockaddrIs(@ptrCast(&a6.addr), .{ .v4 = .{ 0xfd, 0, 0, 0 } }));
}

test "rlimits are translated from Linux numbers" {
    try testing.expectEqual(@as(?c_int, 8), rlimitResource(7)); // nofile
    try testing.expectEqual(@as(?c_int, 7), rlimitResource(6)); // nproc
    try testing.expectEqual(@as(?c_int, 6), rlimitResource(8)); // memlock
    try testing.expectEqual(@as(?c_int, 10), rlimitResource(9)); // as
    try testing.expectEqual(@as(?c_int, 4), rlimitResource(4)); // core
    try testing.expectEqual(@as(?c_int, null), rlimitResource(15));
    try testing.expectEqual(RLIM_INFINITY, rlimitValue(std.math.maxInt(u64)));
    try testing.expectEqual(@as(i64, 1024), rlimitValue(1024));
}

test "process start: microseconds since boot from kinfo_proc and boottime" {
    var kp = [_]u8{0} ** kinfo_proc_size;
    std.mem.writeInt(i32, kp[0..4], kinfo_proc_size, .little);
    std.mem.writeInt(i32, kp[72..76], 4242, .little);
    std.mem.writeInt(i64, kp[336..344], 1_700_000_123, .little);
    std.mem.writeInt(i64, kp[344..352], 250_000, .little);
    try testing.expectEqual(@as(?u64, 123_250_000), procStartMicros(&kp, 4242, .{ 1_700_000_000, 0 }));
    // A clock step moves both ki_start and boottime: the identity stays.
    std.mem.writeInt(i64, kp[336..344], 1_700_003_723, .little);
    try testing.expectEqual(@as(?u64, 123_250_000), procStartMicros(&kp, 4242, .{ 1_700_003_600, 0 }));
    try testing.expectEqual(@as(?u64, 123_000_000 + 250_000 - 900_000), procStartMicros(&kp, 4242, .{ 1_700_003_600, 900_000 }));
    try testing.expectEqual(@as(?u64, null), procStartMicros(&kp, 4243, .{ 0, 0 })); // another pid
    try testing.expectEqual(@as(?u64, null), procStartMicros(kp[0..1000], 4242, .{ 0, 0 })); // short
    std.mem.writeInt(i32, kp[0..4], 1096, .little);
    try testing.expectEqual(@as(?u64, null), procStartMicros(&kp, 4242, .{ 0, 0 })); // another layout
}

test "status lines" {
    var buf: [64]u8 = undefined;
    try testing.expectEqualStrings("X 3\n", endLine(&buf, decodeWait(3 << 8)));
    try testing.expectEqualStrings("X 0\n", endLine(&buf, decodeWait(0)));
    try testing.expectEqualStrings("S 9\n", endLine(&buf, decodeWait(9)));
    try testing.expectEqualStrings("S 15\n", endLine(&buf, decodeWait(15 | 0x80))); // with core flag
    try testing.expectEqualStrings("E 2 mount x: ENOENT\n", errorLine(&buf, 2, "mount x: ENOENT"));
    var small: [16]u8 = undefined;
    const l = errorLine(&small, 22, "a very long text that does not fit");
    try testing.expectEqual(@as(usize, 16), l.len);
    try testing.expectEqual(@as(u8, '\n'), l[15]);
    try testing.expectEqualStrings("E 1 a b\n", errorLine(&buf, 1, "a\nb"));
}

test "error texts name the step, the errno, the kernel message and a hint" {
    var f = Failure{};
    f.set(errnoCode(.NOSYS), "add RCTL rule {s}", .{"jail:a:memoryuse:deny=1"}, "");
    try testing.expectEqualStrings("add RCTL rule jail:a:memoryuse:deny=1: ENOSYS (RACCT/RCTL is disabled: set kern.racct.enable=1 in /boot/loader.conf and reboot)", f.text());
    var kmsg = [_]u8{0} ** 32;
    @memcpy(kmsg[0..17], "unknown parameter");
    f.set(errnoCode(.INVAL), "create jail {s}", .{"lj-a"}, &kmsg);
    try testing.expectEqualStrings("create jail lj-a: EINVAL: unknown parameter", f.text());
    f.set(errnoCode(.PERM), "create jail {s}", .{"lj-a"}, "");
    try testing.expectEqualStrings("create jail lj-a: EPERM (lightjail's FreeBSD backend must run as root)", f.text());
    try testing.expectEqual(errnoCode(.PERM), f.errno);
}

test "PATH search candidates" {
    var buf: [64]u8 = undefined;
    const env = [_][*:0]const u8{ "A=1", "PATH=/usr/bin::/bin" };
    var it = PathIter.init("sh", pathOf(&env));
    try testing.expectEqualStrings("/usr/bin/sh", it.next(&buf).?);
    try testing.expectEqualStrings("./sh", it.next(&buf).?);
    try testing.expectEqualStrings("/bin/sh", it.next(&buf).?);
    try testing.expect(it.next(&buf) == null);
    var direct = PathIter.init("./run", default_path);
    try testing.expectEqualStrings("./run", direct.next(&buf).?);
    try testing.expect(direct.next(&buf) == null);
    try testing.expectEqualStrings(default_path, pathOf(&.{}));
}
