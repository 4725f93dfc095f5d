//! The rules of a root's private addresses, defined once for the TypeScript API (through
//! `lj_lease` in jail.zig) and the native ljspawn alike:
//!
//! - a root's network names: its real path's sha256 gives its nftables table
//!   ("lightjail_<12 hex>") and its host veths' prefix ("ljn<4 hex>"); the jail subnet is an
//!   IPv4 block between /8 and /29 without host bits;
//! - the machine-wide registry of live roots, /run/lightjail/roots (tmpfs: gone at reboot, like
//!   every process it describes): one file per (root, owner process) "<root hash>.<owner>",
//!   written under an exclusive flock(2) on roots.lock after checking the live others, so two
//!   roots whose subnets overlap (or whose veth prefixes clash) cannot both start;
//! - the address leases, one file per address under <root>/run/net/leases/, made with link(2)
//!   from a finished temporary file: it appears atomically with its content and only one
//!   process can hold it. It names its owner "<pid>.<start time>"; a lease whose owner is gone
//!   is stale: exactly one process claims it (rename), takes its kernel state off the host
//!   (netwire.takeOff) and may lease the address again;
//! - the refusals (an invalid address, one in use, a full subnet, a registry conflict), each
//!   worded here once with its kind (which sysexits code and HTTP status it gets) and a hint.
//!
//! File formats (JSON lease and registry files) are the ones every lightjail process reads.
const std = @import("std");
const linux = std.os.linux;
const netwire = @import("netwire.zig");

const Allocator = std.mem.Allocator;

pub const default_subnet = "10.233.0.0/16";
const registry_dir = "/run/lightjail/roots";
const registry_lock = "/run/lightjail/roots.lock";

// ---------------------------------------------------------------------------------------
// Refusals: what the user reads, worded once.

/// Which LjError kind a refusal is (src/errors.ts): its exit code and HTTP status follow.
pub const Kind = enum {
    usage,
    conflict,
    config,
    unavailable,
    isolation,

    /// sysexits(3), as src/errors.ts maps the kinds.
    pub fn exitCode(k: Kind) u8 {
        return switch (k) {
            .usage => 64,
            .conflict => 73,
            .config => 78,
            .unavailable => 69,
            .isolation => 71,
        };
    }
};

/// Why an operation refused, for the caller to show: "kind\tcode\tmessage\thint" crosses the
/// FFI boundary; the native ljspawn prints message and hint itself.
pub const Why = struct {
    kind: Kind = .isolation,
    code: []const u8 = "",
    buf: [1024]u8 = undefined,
    msg_len: usize = 0,
    hint_len: usize = 0,

    pub fn message(w: *const Why) []const u8 {
        return w.buf[0..w.msg_len];
    }
    pub fn hint(w: *const Why) []const u8 {
        return w.buf[w.msg_len..][0..w.hint_len];
    }

    fn set(w: *Why, kind: Kind, code: []const u8, comptime fmt: []const u8, args: anytype, comptime hint_fmt: []const u8, hint_args: anytype) error{Refused} {
        w.kind = kind;
        w.code = code;
        const m = std.fmt.bufPrint(&w.buf, fmt, args) catch w.buf[0..];
        w.msg_len = m.len;
        const h = std.fmt.bufPrint(w.buf[m.len..], hint_fmt, hint_args) catch w.buf[m.len..];
        w.hint_len = h.len;
        return error.Refused;
    }

    fn io(w: *Why, what: []const u8, path: []const u8, e: anyerror) error{Refused} {
        return w.set(.isolation, "net-state", "{s} {s}: {s}", .{ what, path, @errorName(e) }, "", .{});
    }
};

pub const Error = error{ Refused, OutOfMemory };

// ---------------------------------------------------------------------------------------
// Addresses and subnets.

pub const Subnet = struct {
    network: u32,
    prefix: u8,
    cidr: []const u8,

    pub fn gateway(s: Subnet) u32 {
        return s.network + 1;
    }
    pub fn first(s: Subnet) u32 {
        return s.network + 2;
    }
    pub fn last(s: Subnet) u32 {
        return (s.network | ~mask(s.prefix)) - 1;
    }
    pub fn contains(s: Subnet, ip: u32) bool {
        return ip & mask(s.prefix) == s.network;
    }
};

fn mask(prefix: u8) u32 {
    return if (prefix == 0) 0 else @as(u32, 0xffffffff) << @intCast(32 - @as(u32, prefix));
}

pub fn parseIp(s: []const u8) ?u32 {
    var it = std.mem.splitScalar(u8, s, '.');
    var out: u32 = 0;
    var n: usize = 0;
    while (it.next()) |part| : (n += 1) {
        if (n == 4 or part.len == 0 or part.len > 3) return null;
        for (part) |c| if (c < '0' or c > '9') return null;
        const v = std.fmt.parseInt(u8, part, 10) catch return null;
        out = (out << 8) | v;
    }
    return if (n == 4) out else null;
}

pub fn formatIp(buf: *[16]u8, ip: u32) []const u8 {
    return std.fmt.bufPrint(buf, "{d}.{d}.{d}.{d}", .{ ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255 }) catch unreachable;
}

pub fn ipBytes(ip: u32) [4]u8 {
    var b: [4]u8 = undefined;
    std.mem.writeInt(u32, &b, ip, .big);
    return b;
}

/// A jail subnet: /8 to /29 (a jail needs a network, gateway and broadcast address besides its
/// own), no host bits. `source` names where the text came from, for the refusal.
pub fn parseSubnet(cidr: []const u8, source: []const u8, why: *Why) error{Refused}!Subnet {
    const slash = std.mem.indexOfScalar(u8, cidr, '/');
    const ip = if (slash) |s| parseIp(cidr[0..s]) else null;
    const p = if (slash) |s| cidr[s + 1 ..] else "";
    const prefix: ?u8 = blk: {
        if (p.len == 0 or p.len > 2) break :blk null;
        for (p) |c| if (c < '0' or c > '9') break :blk null;
        break :blk std.fmt.parseInt(u8, p, 10) catch null;
    };
    if (ip == null or prefix == null or prefix.? < 8 or prefix.? > 29)
        return why.set(.config, "bad-subnet", "{s} \"{s}\" is not an IPv4 subnet between /8 and /29", .{ source, cidr }, "e.g. {s}", .{default_subnet});
    const network = ip.? & mask(prefix.?);
    if (network != ip.?) {
        var b: [16]u8 = undefined;
        return why.set(.config, "bad-subnet", "{s} \"{s}\" has host bits set; did you mean {s}/{d}?", .{ source, cidr, formatIp(&b, network), prefix.? }, "", .{});
    }
    return .{ .network = network, .prefix = prefix.?, .cidr = cidr };
}

pub fn overlaps(a: Subnet, b: Subnet) bool {
    const p = @min(a.prefix, b.prefix);
    return a.network & mask(p) == b.network & mask(p);
}

/// A jail's ADDR[/PREFIX]: inside the subnet, neither its network, gateway nor broadcast.
pub fn parseJailAddress(text: []const u8, s: Subnet, why: *Why) error{Refused}!u32 {
    const slash = std.mem.indexOfScalar(u8, text, '/');
    const addr = text[0 .. slash orelse text.len];
    const ip = parseIp(addr) orelse
        return why.set(.usage, "invalid-address", "\"{s}\" is not an IPv4 address", .{text}, "give -i ADDR[/PREFIX] or -i auto", .{});
    if (slash) |sl| {
        const p = std.fmt.parseInt(u8, text[sl + 1 ..], 10) catch 255;
        if (p != s.prefix)
            return why.set(.usage, "invalid-address", "prefix /{s} of {s} does not match the jail subnet {s}", .{ text[sl + 1 ..], text, s.cidr }, "leave the prefix out", .{});
    }
    if (!s.contains(ip))
        return why.set(.usage, "invalid-address", "{s} is outside the jail subnet {s}", .{ addr, s.cidr }, "set LJ_SUBNET or [net] subnet in config.toml", .{});
    if (ip < s.first() or ip > s.last())
        return why.set(.usage, "invalid-address", "{s} is reserved in {s} (network, gateway or broadcast)", .{ addr, s.cidr }, "", .{});
    return ip;
}

// ---------------------------------------------------------------------------------------
// A root's names.

pub const Config = struct {
    /// The root's real path (symlinks followed): what its names derive from.
    root: []const u8,
    /// sha256 of `root`, in hex.
    hash: [64]u8,
    subnet: Subnet,
    /// "lightjail_<12 hex>" (family inet).
    table: [22]u8,
    /// "ljn<4 hex>": every host veth of this root starts with it.
    prefix: [7]u8,
    /// <root>/run/net: leases, links, gateway ports, published ports.
    dir: []const u8,
};

/// The root's names and subnet. `subnet_text` comes from LJ_SUBNET or config.toml (read by the
/// caller); `source` names which, for a refusal.
pub fn config(gpa: Allocator, root_in: []const u8, subnet_text: []const u8, source: []const u8, why: *Why) Error!Config {
    const root = try realRoot(gpa, root_in);
    var c = Config{ .root = root, .hash = undefined, .subnet = undefined, .table = undefined, .prefix = undefined, .dir = try std.fs.path.join(gpa, &.{ root_in, "run", "net" }) };
    names(root, &c);
    c.subnet = try parseSubnet(try gpa.dupe(u8, subnet_text), source, why);
    return c;
}

/// The last root resolved, for the next call: a process works with one root, asked often.
var last_root: struct { lock: std.Thread.Mutex = .{}, in: [512]u8 = undefined, in_len: usize = 0, real: [512]u8 = undefined, real_len: usize = 0 } = .{};

fn realRoot(gpa: Allocator, root_in: []const u8) Allocator.Error![]const u8 {
    last_root.lock.lock();
    defer last_root.lock.unlock();
    if (last_root.in_len > 0 and std.mem.eql(u8, last_root.in[0..last_root.in_len], root_in))
        return gpa.dupe(u8, last_root.real[0..last_root.real_len]);
    const real = std.fs.cwd().realpathAlloc(gpa, root_in) catch try std.fs.path.resolve(gpa, &.{root_in});
    if (root_in.len <= last_root.in.len and real.len <= last_root.real.len) {
        @memcpy(last_root.in[0..root_in.len], root_in);
        last_root.in_len = root_in.len;
        @memcpy(last_root.real[0..real.len], real);
        last_root.real_len = real.len;
    }
    return real;
}

fn names(real_root: []const u8, c: *Config) void {
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(real_root, &digest, .{});
    _ = std.fmt.bufPrint(&c.hash, "{x}", .{&digest}) catch unreachable;
    _ = std.fmt.bufPrint(&c.table, "lightjail_{s}", .{c.hash[0..12]}) catch unreachable;
    _ = std.fmt.bufPrint(&c.prefix, "ljn{s}", .{c.hash[0..4]}) catch unreachable;
}

/// The host end of a jail's veth (15 bytes, the kernel's limit): the root's prefix and the
/// address in hex, so that it names the root and the address (and through its lease, the owner).
pub fn vethName(prefix: []const u8, ip: u32) [15]u8 {
    var out: [15]u8 = undefined;
    _ = std.fmt.bufPrint(&out, "{s}{x:0>8}", .{ prefix, ip }) catch unreachable;
    return out;
}

// ---------------------------------------------------------------------------------------
// Owners: "<pid>.<start time>".

/// "<pid>.<start time>" of this process.
pub fn ownerId(gpa: Allocator) ![]const u8 {
    const pid = linux.getpid();
    var b: [32]u8 = undefined;
    const start = startTime(pid, &b) orelse return error.NoProc;
    return std.fmt.allocPrint(gpa, "{d}.{s}", .{ pid, start });
}

/// A process's start time (field 22 of /proc/PID/stat), or null when it is gone or a zombie.
fn startTime(pid: i32, out: *[32]u8) ?[]const u8 {
    var pbuf: [32]u8 = undefined;
    const path = std.fmt.bufPrint(&pbuf, "/proc/{d}/stat", .{pid}) catch return null;
    var sbuf: [1024]u8 = undefined;
    const stat = std.fs.cwd().readFile(path, &sbuf) catch return null;
    const close = std.mem.lastIndexOfScalar(u8, stat, ')') orelse return null;
    if (close + 2 > stat.len) return null;
    var it = std.mem.tokenizeScalar(u8, stat[close + 2 ..], ' ');
    var n: usize = 0;
    var state: []const u8 = "";
    while (it.next()) |f| : (n += 1) {
        if (n == 0) state = f;
        if (n == 19) {
            if (std.mem.eql(u8, state, "Z") or std.mem.eql(u8, state, "X") or f.len > out.len) return null;
            @memcpy(out[0..f.len], f);
            return out[0..f.len];
        }
    }
    return null;
}

/// True while the process an owner id names runs (same start time, not a zombie).
pub fn ownerAlive(owner: []const u8) bool {
    const dot = std.mem.indexOfScalar(u8, owner, '.') orelse return false;
    const pid = std.fmt.parseInt(i32, owner[0..dot], 10) catch return false;
    if (pid <= 0) return false;
    var b: [32]u8 = undefined;
    const now = startTime(pid, &b) orelse return false;
    return std.mem.eql(u8, now, owner[dot + 1 ..]);
}

// ---------------------------------------------------------------------------------------
// The registry of live roots.

pub const Entry = struct { root: []const u8, subnet: []const u8, vethPrefix: []const u8 = "", owner: []const u8 };

/// The registry's lock, held while open (the kernel drops it with the descriptor).
pub const Lock = struct {
    fd: std.posix.fd_t,
    pub fn release(l: Lock) void {
        std.posix.close(l.fd);
    }
};

/// Takes the registry's lock, waiting up to 10 s for another process's short hold.
pub fn lock(why: *Why) error{Refused}!Lock {
    std.fs.cwd().makePath(registry_dir) catch |e| return why.io("create", registry_dir, e);
    const f = std.fs.cwd().createFile(registry_lock, .{ .truncate = false, .mode = 0o600 }) catch |e| return why.io("open", registry_lock, e);
    var waited: u32 = 0;
    while (true) : (waited += 2) {
        std.posix.flock(f.handle, std.posix.LOCK.EX | std.posix.LOCK.NB) catch |e| switch (e) {
            error.WouldBlock => {
                if (waited >= 10_000) {
                    f.close();
                    return why.set(.unavailable, "registry-busy", "{s} stayed locked for 10 s", .{registry_lock}, "another lightjail process holds it; check for a stopped (SIGSTOP) lj process", .{});
                }
                std.Thread.sleep(2 * std.time.ns_per_ms);
                continue;
            },
            else => {
                f.close();
                return why.io("lock", registry_lock, e);
            },
        };
        return .{ .fd = f.handle };
    }
}

/// Every readable entry (live or not), for callers that only need the roots' paths.
pub fn entries(gpa: Allocator) Allocator.Error![]Entry {
    var out: std.ArrayList(Entry) = .empty;
    var dir = std.fs.cwd().openDir(registry_dir, .{ .iterate = true }) catch return out.items;
    defer dir.close();
    var it = dir.iterate();
    while (it.next() catch null) |e| {
        if (readEntry(gpa, dir, e.name)) |entry| try out.append(gpa, entry);
    }
    return out.items;
}

fn readEntry(gpa: Allocator, dir: std.fs.Dir, name: []const u8) ?Entry {
    const text = dir.readFileAlloc(gpa, name, 1 << 16) catch return null;
    return std.json.parseFromSliceLeaky(Entry, gpa, text, .{ .ignore_unknown_fields = true }) catch null;
}

/// The live entries; files of dead owners (or unreadable ones) are removed. Under the lock.
pub fn liveEntries(gpa: Allocator, _: Lock) Allocator.Error![]Entry {
    var out: std.ArrayList(Entry) = .empty;
    var dir = std.fs.cwd().openDir(registry_dir, .{ .iterate = true }) catch return out.items;
    defer dir.close();
    var dead: std.ArrayList([]const u8) = .empty;
    var it = dir.iterate();
    while (it.next() catch null) |e| {
        if (readEntry(gpa, dir, e.name)) |entry| if (ownerAlive(entry.owner)) {
            try out.append(gpa, entry);
            continue;
        };
        try dead.append(gpa, try gpa.dupe(u8, e.name));
    }
    for (dead.items) |name| dir.deleteFile(name) catch {};
    return out.items;
}

/// Why a root may not go live next to a live entry `e`, or nothing.
fn conflict(c: *const Config, e: Entry, why: *Why) error{Refused}!void {
    const pid = e.owner[0 .. std.mem.indexOfScalar(u8, e.owner, '.') orelse e.owner.len];
    if (std.mem.eql(u8, e.root, c.root)) {
        if (std.mem.eql(u8, e.subnet, c.subnet.cidr)) return;
        return why.set(.conflict, "subnet-mismatch", "jail subnet {s} for {s} differs from {s}, which this root is live with in process {s}", .{ c.subnet.cidr, c.root, e.subnet, pid }, "every process of a root must use the same subnet (LJ_SUBNET, [net] subnet)", .{});
    }
    var ignore: Why = .{};
    const theirs = parseSubnet(e.subnet, "", &ignore) catch return;
    if (overlaps(theirs, c.subnet))
        return why.set(.conflict, "subnet-overlap", "jail subnet {s} of {s} overlaps {s} of {s} (process {s})", .{ c.subnet.cidr, c.root, e.subnet, e.root, pid }, "give one of them another subnet: LJ_SUBNET=... or [net] subnet = \"...\" in {s}/config.toml", .{c.root});
    if (std.mem.eql(u8, e.vethPrefix, &c.prefix))
        return why.set(.conflict, "root-tag-clash", "state roots {s} and {s} (process {s}) hash to the same veth prefix {s}", .{ c.root, e.root, pid, &c.prefix }, "move one of the roots to another path (LIGHTJAIL_ROOT)", .{});
}

/// Registers `owner` as live with the root and its subnet; returns the entry's file. Refuses
/// when a live root's subnet overlaps (or this root is live with another subnet).
pub fn register(gpa: Allocator, c: *const Config, owner: []const u8, why: *Why) Error![]const u8 {
    const l = try lock(why);
    defer l.release();
    for (try liveEntries(gpa, l)) |e| try conflict(c, e, why);
    const name = try std.fmt.allocPrint(gpa, "{s}.{s}", .{ c.hash[0..16], owner });
    const body = try std.fmt.allocPrint(gpa, "{f}", .{std.json.fmt(Entry{ .root = c.root, .subnet = c.subnet.cidr, .vethPrefix = &c.prefix, .owner = owner }, .{})});
    const file = try std.fs.path.join(gpa, &.{ registry_dir, name });
    std.fs.cwd().writeFile(.{ .sub_path = file, .data = body, .flags = .{ .mode = 0o600 } }) catch |e| return why.io("write", file, e);
    return file;
}

pub fn unregister(file: []const u8) void {
    if (!std.mem.startsWith(u8, file, registry_dir ++ "/")) return;
    std.fs.cwd().deleteFile(file) catch {};
}

/// The lock, if no live process holds `root` (no jail of it can be set up while it is held);
/// null when one does.
pub fn lockIfIdle(gpa: Allocator, root: []const u8, why: *Why) Error!?Lock {
    const l = try lock(why);
    for (try liveEntries(gpa, l)) |e| if (std.mem.eql(u8, e.root, root)) {
        l.release();
        return null;
    };
    return l;
}

// ---------------------------------------------------------------------------------------
// Leases.

/// A lease file's content.
pub const Lease = struct {
    address: []const u8,
    owner: []const u8,
    jail: []const u8 = "",
    veth: []const u8 = "",
    egress: bool = false,
    uplink: ?[]const u8 = null,
    links: []const []const u8 = &.{},
};

pub const Request = struct {
    /// "auto" or ADDR[/PREFIX].
    address: []const u8,
    owner: []const u8,
    jail: []const u8,
    egress: bool = false,
    uplink: ?[]const u8 = null,
    links: []const []const u8 = &.{},
    /// The host veth's name when it is not the address's own ("<prefix>p...": a pooled
    /// veth's, or the native ljspawn's own).
    veth: ?[]const u8 = null,
    /// Whether the caller removes a reclaimed address's published ports (the TypeScript side,
    /// which publishes them); without, such an address is left for `lj gc`.
    removes_published: bool = false,
    /// Whether a dead owner's lease may be reclaimed on the way. The namespace pool's makers
    /// lease only free addresses: reclaiming takes state off the host through the owner's
    /// nftables socket, which is the owner's to use.
    reclaim: bool = true,
};

pub const Acquired = struct {
    lease: Lease,
    /// Addresses whose stale leases were reclaimed on the way (their kernel state is off).
    reclaimed: []const []const u8,
};

fn leasesDir(gpa: Allocator, c: *const Config) ![]const u8 {
    return std.fs.path.join(gpa, &.{ c.dir, "leases" });
}

pub fn leasePath(gpa: Allocator, dir: []const u8, address: []const u8) ![]const u8 {
    return std.fs.path.join(gpa, &.{ dir, "leases", address });
}

pub fn readLease(gpa: Allocator, file: []const u8) ?Lease {
    const text = std.fs.cwd().readFileAlloc(gpa, file, 1 << 16) catch return null;
    return std.json.parseFromSliceLeaky(Lease, gpa, text, .{ .ignore_unknown_fields = true }) catch null;
}

fn exists(path: []const u8) bool {
    std.fs.cwd().access(path, .{}) catch return false;
    return true;
}

/// Whether an interface of this name is on the host: an index lookup (RCU only), which never
/// waits on sysfs while other jails' veths are being made or removed.
fn vethExists(name: []const u8) bool {
    if (name.len == 0 or name.len >= linux.IFNAMESIZE) return false;
    const rc = linux.socket(linux.AF.UNIX, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0);
    if (linux.E.init(rc) != .SUCCESS) return false;
    const fd: i32 = @intCast(rc);
    defer _ = linux.close(fd);
    var req = std.mem.zeroes(linux.ifreq);
    @memcpy(req.ifrn.name[0..name.len], name);
    return linux.E.init(linux.ioctl(fd, linux.SIOCGIFINDEX, @intFromPtr(&req))) == .SUCCESS;
}

var tmp_seq = std.atomic.Value(u32).init(0);

/// Creates `file` with `body`, atomically and only if it does not exist (link(2) of a
/// finished temporary file: an unnamed one where the file system has them). False when it exists.
fn createExclusive(gpa: Allocator, dir: []const u8, file: []const u8, body: []const u8, why: *Why) Error!bool {
    if (try createUnnamed(gpa, dir, file, body, why)) |made| return made;
    const tmp = try std.fmt.allocPrint(gpa, "{s}/.tmp.{d}.z{d}", .{ dir, linux.getpid(), tmp_seq.fetchAdd(1, .monotonic) });
    std.fs.cwd().writeFile(.{ .sub_path = tmp, .data = body, .flags = .{ .mode = 0o600 } }) catch |e| return why.io("write", tmp, e);
    defer std.fs.cwd().deleteFile(tmp) catch {};
    std.posix.link(tmp, file) catch |e| switch (e) {
        error.PathAlreadyExists => return false,
        else => return why.io("link", file, e),
    };
    return true;
}

/// createExclusive with an O_TMPFILE file linked into place (no name to make and remove);
/// null where the file system has none.
fn createUnnamed(gpa: Allocator, dir: []const u8, file: []const u8, body: []const u8, why: *Why) Error!?bool {
    const dirz = try gpa.dupeZ(u8, dir);
    // The kernel's O_TMPFILE is __O_TMPFILE with O_DIRECTORY: without the latter it is EINVAL.
    const rc = linux.open(dirz, .{ .ACCMODE = .WRONLY, .TMPFILE = true, .DIRECTORY = true, .CLOEXEC = true }, 0o600);
    if (linux.E.init(rc) != .SUCCESS) return null;
    const fd: i32 = @intCast(rc);
    defer _ = linux.close(fd);
    var done: usize = 0;
    while (done < body.len) {
        const n = linux.write(fd, body[done..].ptr, body.len - done);
        switch (linux.E.init(n)) {
            .SUCCESS => done += n,
            .INTR => {},
            else => |e| return why.set(.isolation, "net-state", "write a lease in {s}: E{s}", .{ dir, @tagName(e) }, "", .{}),
        }
    }
    var proc: [32]u8 = undefined;
    const from = std.fmt.bufPrintZ(&proc, "/proc/self/fd/{d}", .{fd}) catch unreachable;
    const to = try gpa.dupeZ(u8, file);
    return switch (linux.E.init(linux.linkat(linux.AT.FDCWD, from, linux.AT.FDCWD, to, linux.AT.SYMLINK_FOLLOW))) {
        .SUCCESS => true,
        .EXIST => false,
        else => |e| why.set(.isolation, "net-state", "link {s}: E{s}", .{ file, @tagName(e) }, "", .{}),
    };
}

/// Takes a dead owner's lease out of the way (a rename only one process wins) and its kernel
/// state off the host; returns it, or null when it is live, gone, or someone else's to clean.
/// With `published_ok` false, a lease whose address has published ports is left alone.
pub fn claimStale(gpa: Allocator, c: *const Config, address: []const u8, published_ok: bool) Allocator.Error!?Lease {
    const file = try leasePath(gpa, c.dir, address);
    const seen = readLease(gpa, file) orelse return null;
    if (ownerAlive(seen.owner)) return null;
    if (!published_ok and exists(try std.fs.path.join(gpa, &.{ c.dir, "inbound", address }))) return null;
    const tomb = try std.fmt.allocPrint(gpa, "{s}/.stale.{s}.{d}.z{d}", .{ c.dir, address, linux.getpid(), tmp_seq.fetchAdd(1, .monotonic) });
    std.fs.cwd().rename(file, tomb) catch return null; // someone else got there first
    defer std.fs.cwd().deleteFile(tomb) catch {};
    const got = readLease(gpa, tomb) orelse seen;
    if (ownerAlive(got.owner)) {
        // A live owner took the address between our read and the rename: give it back.
        std.posix.link(tomb, file) catch {};
        return null;
    }
    // Leftovers that failed to come off now are swept by `lj gc` (the veth's name and the
    // elements' address are the lease's; gc finds them without it).
    _ = try takeOff(gpa, c, got);
    return got;
}

/// Takes a lease's state off the host: its filter elements and links (one nftables
/// transaction; none when the table is gone), its link records, and its host veth (down and
/// renamed out of its address's way). For a finished jail and a stale lease alike.
pub fn takeOff(gpa: Allocator, c: *const Config, l: Lease) Allocator.Error!?netwire.RunFailure {
    const ip = parseIp(l.address) orelse return null;
    var links: std.ArrayList([8]u8) = .empty;
    const links_dir = try std.fs.path.join(gpa, &.{ c.dir, "links" });
    if (std.fs.cwd().openDir(links_dir, .{ .iterate = true })) |d| {
        var dir = d;
        defer dir.close();
        var gone: std.ArrayList([]const u8) = .empty;
        var it = dir.iterate();
        while (it.next() catch null) |e| {
            const us = std.mem.indexOfScalar(u8, e.name, '_') orelse continue;
            const from = parseIp(e.name[0..us]) orelse continue;
            const to = parseIp(e.name[us + 1 ..]) orelse continue;
            if (from != ip and to != ip) continue;
            var k: [8]u8 = undefined;
            k[0..4].* = ipBytes(from);
            k[4..8].* = ipBytes(to);
            try links.append(gpa, k);
            try gone.append(gpa, try gpa.dupe(u8, e.name));
        }
        for (gone.items) |n| dir.deleteFile(n) catch {};
    } else |_| {}
    // Only a veth of this root is ever released (a lease file names it; trust no other).
    const ours = std.mem.startsWith(u8, l.veth, &c.prefix);
    return netwire.takeOff(&c.table, .{ .network = ipBytes(c.subnet.network), .prefix = c.subnet.prefix }, ipBytes(ip), l.egress, l.veth, l.uplink orelse "", links.items, ours);
}

/// Leases an address for `req.owner`: the requested one, or with "auto" the lowest free one.
/// A dead owner's lease is reclaimed (its kernel state off) when its address is wanted, or
/// when the subnet is otherwise full. A veth of this root at an address nobody leases is a
/// leftover `lj gc` has not removed yet: that address is skipped.
pub fn acquire(gpa: Allocator, c: *const Config, req: Request, why: *Why) Error!Acquired {
    const dir = try leasesDir(gpa, c);
    if (!exists(dir)) std.fs.cwd().makePath(dir) catch |e| return why.io("create", dir, e);
    var reclaimed: std.ArrayList([]const u8) = .empty;
    const s = c.subnet;
    if (!std.mem.eql(u8, req.address, "auto")) {
        const ip = try parseJailAddress(req.address, s, why);
        if (try tryTake(gpa, c, req, ip, &reclaimed, why)) |l| return .{ .lease = l, .reclaimed = reclaimed.items };
        var b: [16]u8 = undefined;
        const addr = formatIp(&b, ip);
        const holder = readLease(gpa, try leasePath(gpa, c.dir, addr));
        if (holder == null and vethExists(&vethName(&c.prefix, ip)))
            return why.set(.conflict, "address-in-use", "address {s} is in use: its interface {s} is still on the host", .{ addr, &vethName(&c.prefix, ip) }, "pick another address, -i auto, or run lj gc", .{});
        return why.set(.conflict, "address-in-use", "address {s} is in use by jail {s}", .{ addr, if (holder) |h| h.jail else "?" }, "pick another address, or -i auto", .{});
    }
    // Lowest free address first: the listing only skips known leases; link(2) decides.
    var taken = std.AutoHashMap(u32, void).init(gpa);
    {
        var d = std.fs.cwd().openDir(dir, .{ .iterate = true }) catch |e| return why.io("open", dir, e);
        defer d.close();
        var it = d.iterate();
        while (it.next() catch null) |e| if (parseIp(e.name)) |ip| try taken.put(ip, {});
    }
    var ip = s.first();
    while (ip <= s.last()) : (ip += 1) {
        if (taken.contains(ip)) continue;
        if (try take(gpa, c, req, ip, why)) |l| return .{ .lease = l, .reclaimed = reclaimed.items };
    }
    // Full: leases of dead owners are the only hope.
    if (!req.reclaim) return why.set(.unavailable, "subnet-full", "no free address left in {s}", .{s.cidr}, "", .{});
    var kit = taken.keyIterator();
    while (kit.next()) |k| {
        if (k.* < s.first() or k.* > s.last()) continue;
        if (try tryTake(gpa, c, req, k.*, &reclaimed, why)) |l| return .{ .lease = l, .reclaimed = reclaimed.items };
    }
    return why.set(.unavailable, "subnet-full", "no free address left in {s}", .{s.cidr}, "end some jails, run lj gc, or configure a larger subnet (LJ_SUBNET)", .{});
}

fn tryTake(gpa: Allocator, c: *const Config, req: Request, ip: u32, reclaimed: *std.ArrayList([]const u8), why: *Why) Error!?Lease {
    if (try take(gpa, c, req, ip, why)) |l| return l;
    if (!req.reclaim) return null;
    var b: [16]u8 = undefined;
    const addr = formatIp(&b, ip);
    const stale = try claimStale(gpa, c, addr, req.removes_published) orelse return null;
    try reclaimed.append(gpa, try gpa.dupe(u8, stale.address));
    return take(gpa, c, req, ip, why);
}

fn take(gpa: Allocator, c: *const Config, req: Request, ip: u32, why: *Why) Error!?Lease {
    var b: [16]u8 = undefined;
    const veth = vethName(&c.prefix, ip);
    const l = Lease{
        .address = try gpa.dupe(u8, formatIp(&b, ip)),
        .owner = req.owner,
        .jail = req.jail,
        .veth = try gpa.dupe(u8, if (pooledName(c, req.veth)) |p| p else &veth),
        .egress = req.egress,
        .uplink = if (req.egress) req.uplink else null,
        .links = req.links,
    };
    const body = try std.fmt.allocPrint(gpa, "{f}", .{std.json.fmt(l, .{ .emit_null_optional_fields = false })});
    const file = try leasePath(gpa, c.dir, l.address);
    if (!try createExclusive(gpa, c.dir, file, body, why)) return null;
    if (vethExists(&veth)) {
        std.fs.cwd().deleteFile(file) catch {};
        return null;
    }
    return l;
}

/// A name of this root's apart from any address ("<prefix>p<7 hex>", netwire.spareName: a
/// pooled veth's, or the native ljspawn's own), or null.
fn pooledName(c: *const Config, name: ?[]const u8) ?[]const u8 {
    const n = name orelse return null;
    if (n.len != 15 or !std.mem.startsWith(u8, n, &c.prefix) or n[7] != 'p') return null;
    for (n[8..]) |ch| if (!std.ascii.isHex(ch)) return null;
    return n;
}

/// Gives an address back, if `owner` still holds it.
pub fn drop(gpa: Allocator, dir: []const u8, address: []const u8, owner: []const u8) Allocator.Error!void {
    if (parseIp(address) == null) return;
    const file = try leasePath(gpa, dir, address);
    if (readLease(gpa, file)) |l| if (!std.mem.eql(u8, l.owner, owner)) return; // not ours any more
    std.fs.cwd().deleteFile(file) catch {};
}

/// A lease the namespace pool made ahead for a pooled veth (jail ""), made the jail's: the
/// file is rewritten in place with the jail's record (no new file, no link: the jail's path
/// pays neither). Refused when the lease is not such a lease of `req.owner`'s.
pub fn adopt(gpa: Allocator, c: *const Config, req: Request, why: *Why) Error!Lease {
    const ip = try parseJailAddress(req.address, c.subnet, why);
    var b: [16]u8 = undefined;
    const addr = formatIp(&b, ip);
    const file = try leasePath(gpa, c.dir, addr);
    const not_pools = struct {
        fn refuse(w: *Why, a: []const u8) error{Refused} {
            return w.set(.isolation, "net-state", "address {s} is not one the namespace pool holds", .{a}, "", .{});
        }
    }.refuse;
    // Read and rewritten through one descriptor: this is on the jail's path.
    const f = std.fs.cwd().openFile(file, .{ .mode = .read_write }) catch return not_pools(why, addr);
    defer f.close();
    const text = f.readToEndAlloc(gpa, 1 << 16) catch return not_pools(why, addr);
    const held = std.json.parseFromSliceLeaky(Lease, gpa, text, .{ .ignore_unknown_fields = true }) catch return not_pools(why, addr);
    if (held.jail.len != 0 or !std.mem.eql(u8, held.owner, req.owner) or req.jail.len == 0) return not_pools(why, addr);
    const l = Lease{
        .address = try gpa.dupe(u8, addr),
        .owner = req.owner,
        .jail = req.jail,
        .veth = held.veth,
        .egress = req.egress,
        .uplink = if (req.egress) req.uplink else null,
        .links = req.links,
    };
    const body = try std.fmt.allocPrint(gpa, "{f}", .{std.json.fmt(l, .{ .emit_null_optional_fields = false })});
    // Longer than the pool's record, never shorter: written whole at offset 0, then cut to size.
    f.pwriteAll(body, 0) catch |e| return why.io("write", file, e);
    f.setEndPos(body.len) catch |e| return why.io("truncate", file, e);
    return l;
}

/// Gives back an address the namespace pool leased ahead, if it still is the pool's (owner
/// `owner`, no jail): once adopted, the lease is its jail's to drop.
pub fn dropPooled(gpa: Allocator, dir: []const u8, address: []const u8, owner: []const u8) Allocator.Error!void {
    const file = try leasePath(gpa, dir, address);
    const l = readLease(gpa, file) orelse return;
    if (l.jail.len != 0 or !std.mem.eql(u8, l.owner, owner)) return;
    std.fs.cwd().deleteFile(file) catch {};
}

/// Every readable lease of a root.
pub fn list(gpa: Allocator, dir: []const u8) Allocator.Error![]Lease {
    var out: std.ArrayList(Lease) = .empty;
    const leases = try std.fs.path.join(gpa, &.{ dir, "leases" });
    var d = std.fs.cwd().openDir(leases, .{ .iterate = true }) catch return out.items;
    defer d.close();
    var it = d.iterate();
    while (it.next() catch null) |e| {
        if (parseIp(e.name) == null) continue;
        if (readLease(gpa, try std.fs.path.join(gpa, &.{ leases, e.name }))) |l| try out.append(gpa, l);
    }
    return out.items;
}

// ---------------------------------------------------------------------------------------
// The native ljspawn's subnet: LJ_SUBNET, else `[net] subnet` in config.toml, else the default.

pub const SubnetSource = struct { text: []const u8, source: []const u8 };

/// Null for a config.toml this small reader does not follow (the TypeScript side reads TOML).
pub fn subnetSource(gpa: Allocator, root: []const u8) !?SubnetSource {
    if (std.posix.getenv("LJ_SUBNET")) |v| if (v.len > 0) return .{ .text = v, .source = "LJ_SUBNET" };
    const file = try std.fs.path.join(gpa, &.{ root, "config.toml" });
    const text = std.fs.cwd().readFileAlloc(gpa, file, 1 << 20) catch return .{ .text = default_subnet, .source = "subnet" };
    var section: []const u8 = "";
    var lines = std.mem.splitScalar(u8, text, '\n');
    while (lines.next()) |raw| {
        const line = std.mem.trim(u8, raw, " \t\r");
        if (line.len == 0 or line[0] == '#') continue;
        if (line[0] == '[') {
            section = std.mem.trim(u8, line, "[] \t");
            continue;
        }
        if (!std.mem.eql(u8, section, "net")) continue;
        const eq = std.mem.indexOfScalar(u8, line, '=') orelse continue;
        if (!std.mem.eql(u8, std.mem.trim(u8, line[0..eq], " \t"), "subnet")) continue;
        const v = std.mem.trim(u8, line[eq + 1 ..], " \t");
        if (v.len < 2 or v[0] != '"' or v[v.len - 1] != '"') return null;
        return .{ .text = v[1 .. v.len - 1], .source = try std.fmt.allocPrint(gpa, "[net] subnet in {s}", .{file}) };
    }
    return .{ .text = default_subnet, .source = "subnet" };
}

// ---------------------------------------------------------------------------------------
// The TypeScript side's requests (`lj_lease`): an operation, its arguments as NUL-separated
// strings, and its answer as JSON in the caller's buffer.

pub const Op = enum(u32) {
    /// root, subnet text, source -> the root's names and subnet
    config = 1,
    /// cidr, source -> the subnet
    subnet = 2,
    /// root, subnet, owner -> the registry file (a JSON string)
    register = 3,
    /// file
    unregister = 4,
    /// real root -> the registry lock's descriptor while no live process holds the root, or -1
    lock_if_idle = 5,
    /// -> every readable registry entry
    roots = 6,
    /// -> the live registry entries (dead ones swept)
    live_roots = 7,
    /// root, subnet, owner, jail, address, egress ("1"), uplink, links (comma-separated), veth
    /// (a pooled veth's name, or empty: the address's) -> {lease, reclaimed}
    acquire = 8,
    /// run/net dir, address, owner
    drop = 9,
    /// root, subnet, address -> the dead owner's lease claimed and taken off, or null
    reclaim = 10,
    /// run/net dir -> every readable lease
    list = 11,
    /// root, subnet, lease (JSON) -> a finished jail's state taken off the host
    take_off = 12,
    /// veth prefix -> the name of a pooled veth set aside for the next jail, or "" (jail.zig)
    pool_claim = 13,
    /// name -> that veth's claim given back (jail.zig)
    pool_unclaim = 14,
    /// -> the namespace pool's addressed sets given back (jail.zig)
    pool_drain = 15,
    /// as acquire, with the address the pool leased ahead -> {lease, reclaimed: []}
    adopt = 16,
    _,
};

pub const Answer = union(enum) {
    /// Bytes of JSON written.
    ok: usize,
    refused,
    /// The answer needs this many bytes.
    too_small: usize,
    /// An OS failure: errno, step and what.
    failed: netwire.RunFailure,
};

pub fn call(gpa: Allocator, op_num: u32, req: []const u8, out: []u8, why: *Why) Answer {
    const json = answer(gpa, @enumFromInt(op_num), req, why) catch |e| switch (e) {
        error.Refused => return .refused,
        error.OutOfMemory => return .{ .failed = .{ .e = .NOMEM, .step = "lease request" } },
        error.BadRequest => return .{ .failed = .{ .e = .INVAL, .step = "decode the lease request" } },
        error.Failed => return .{ .failed = failure },
    };
    if (json.len > out.len) return .{ .too_small = json.len };
    @memcpy(out[0..json.len], json);
    return .{ .ok = json.len };
}

threadlocal var failure: netwire.RunFailure = undefined;

fn answer(gpa: Allocator, op: Op, req: []const u8, why: *Why) (Error || error{ BadRequest, Failed })![]const u8 {
    var args: [9][]const u8 = @splat("");
    var n: usize = 0;
    var it = std.mem.splitScalar(u8, req, 0);
    while (it.next()) |a| : (n += 1) {
        if (n == args.len) return error.BadRequest;
        args[n] = a;
    }
    const js = struct {
        fn of(a: Allocator, v: anytype) Allocator.Error![]const u8 {
            return std.fmt.allocPrint(a, "{f}", .{std.json.fmt(v, .{ .emit_null_optional_fields = false })});
        }
    };
    switch (op) {
        .config => {
            const c = try config(gpa, args[0], args[1], args[2], why);
            return js.of(gpa, .{ .root = c.root, .hash = &c.hash, .table = &c.table, .vethPrefix = &c.prefix, .dir = c.dir, .subnet = subnetJson(c.subnet) });
        },
        .subnet => return js.of(gpa, subnetJson(try parseSubnet(args[0], args[1], why))),
        .register => {
            const c = try config(gpa, args[0], args[1], "subnet", why);
            return js.of(gpa, try register(gpa, &c, args[2], why));
        },
        .unregister => {
            unregister(args[0]);
            return "null";
        },
        .lock_if_idle => {
            const l = try lockIfIdle(gpa, args[0], why);
            return js.of(gpa, if (l) |x| x.fd else -1);
        },
        .roots => return js.of(gpa, try entries(gpa)),
        .live_roots => {
            const l = try lock(why);
            defer l.release();
            return js.of(gpa, try liveEntries(gpa, l));
        },
        .acquire => {
            const c = try config(gpa, args[0], args[1], "subnet", why);
            return js.of(gpa, try acquire(gpa, &c, try leaseRequest(gpa, &args), why));
        },
        .drop => {
            try drop(gpa, args[0], args[1], args[2]);
            return "null";
        },
        .reclaim => {
            const c = try config(gpa, args[0], args[1], "subnet", why);
            if (parseIp(args[2]) == null) return error.BadRequest;
            return js.of(gpa, try claimStale(gpa, &c, args[2], true));
        },
        .list => return js.of(gpa, try list(gpa, args[0])),
        .take_off => {
            const c = try config(gpa, args[0], args[1], "subnet", why);
            const l = std.json.parseFromSliceLeaky(Lease, gpa, args[2], .{ .ignore_unknown_fields = true }) catch return error.BadRequest;
            if (try takeOff(gpa, &c, l)) |f| {
                failure = f;
                return error.Failed;
            }
            return "null";
        },
        .adopt => {
            const c = try config(gpa, args[0], args[1], "subnet", why);
            return js.of(gpa, Acquired{ .lease = try adopt(gpa, &c, try leaseRequest(gpa, &args), why), .reclaimed = &.{} });
        },
        .pool_claim, .pool_unclaim, .pool_drain, _ => return error.BadRequest,
    }
}

/// An acquire or adopt request's arguments: root, subnet, owner, jail, address, egress ("1"),
/// uplink, links (comma-separated), veth (a pooled veth's name, or empty: the address's).
fn leaseRequest(gpa: Allocator, args: *const [9][]const u8) Allocator.Error!Request {
    var links: std.ArrayList([]const u8) = .empty;
    var lit = std.mem.tokenizeScalar(u8, args[7], ',');
    while (lit.next()) |l| try links.append(gpa, l);
    return .{
        .owner = args[2],
        .jail = args[3],
        .address = args[4],
        .egress = std.mem.eql(u8, args[5], "1"),
        .uplink = if (args[6].len > 0) args[6] else null,
        .links = links.items,
        .veth = if (args[8].len > 0) args[8] else null,
        .removes_published = true,
    };
}

fn subnetJson(s: Subnet) struct { network: u32, prefix: u8, gateway: u32, first: u32, last: u32, cidr: []const u8 } {
    return .{ .network = s.network, .prefix = s.prefix, .gateway = s.gateway(), .first = s.first(), .last = s.last(), .cidr = s.cidr };
}

test "subnets, addresses and names" {
    var why: Why = .{};
    const s = try parseSubnet("10.233.0.0/16", "subnet", &why);
    try std.testing.expectEqual(@as(u32, 0x0ae90001), s.gateway());
    try std.testing.expectEqual(@as(u32, 0x0ae9fffe), s.last());
    try std.testing.expectError(error.Refused, parseSubnet("10.233.0.1/16", "LJ_SUBNET", &why));
    try std.testing.expectEqualStrings("LJ_SUBNET \"10.233.0.1/16\" has host bits set; did you mean 10.233.0.0/16?", why.message());
    try std.testing.expectError(error.Refused, parseSubnet("10.233.0.0/30", "subnet", &why));
    try std.testing.expectEqualStrings("bad-subnet", why.code);
    try std.testing.expectError(error.Refused, parseSubnet("10.233.0.0/1x", "subnet", &why));
    try std.testing.expect(overlaps(try parseSubnet("10.233.0.0/16", "", &why), try parseSubnet("10.233.5.0/24", "", &why)));
    try std.testing.expect(!overlaps(try parseSubnet("10.233.0.0/16", "", &why), try parseSubnet("10.234.0.0/16", "", &why)));
    try std.testing.expectEqual(@as(u32, 0x0ae90005), try parseJailAddress("10.233.0.5/16", s, &why));
    try std.testing.expectError(error.Refused, parseJailAddress("10.233.0.1", s, &why));
    try std.testing.expectEqualStrings("10.233.0.1 is reserved in 10.233.0.0/16 (network, gateway or broadcast)", why.message());
    try std.testing.expectError(error.Refused, parseJailAddress("10.9.0.1", s, &why));
    try std.testing.expectEqual(Kind.usage, why.kind);
    try std.testing.expectEqualStrings("ljn3f2a0ae90002", &vethName("ljn3f2a", 0x0ae90002));
    try std.testing.expect(parseIp("1.2.3.+4") == null);
}

test "a lease file as every lightjail process writes it" {
    var buf: [512]u8 = undefined;
    const l = Lease{ .address = "10.1.0.2", .owner = "1.2", .jail = "j\"x", .veth = "ljn00000a010002", .egress = false, .links = &.{"10.1.0.3"} };
    const text = try std.fmt.bufPrint(&buf, "{f}", .{std.json.fmt(l, .{ .emit_null_optional_fields = false })});
    try std.testing.expectEqualStrings("{\"address\":\"10.1.0.2\",\"owner\":\"1.2\",\"jail\":\"j\\\"x\",\"veth\":\"ljn00000a010002\",\"egress\":false,\"links\":[\"10.1.0.3\"]}", text);
}

test "a lease is made from an unnamed file where the file system has them, exclusively" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const gpa = arena.allocator();
    var tmp = std.testing.tmpDir(.{ .iterate = true });
    defer tmp.cleanup();
    const dir = try tmp.dir.realpathAlloc(gpa, ".");
    const file = try std.fs.path.join(gpa, &.{ dir, "10.1.0.2" });
    var why = Why{};
    // The test's directory is on a file system with O_TMPFILE (tmpfs or ext4 here): null would
    // mean the unnamed file was refused and every lease paid for a name made and removed.
    try std.testing.expectEqual(@as(?bool, true), try createUnnamed(gpa, dir, file, "{\"a\":1}", &why));
    try std.testing.expectEqual(@as(?bool, false), try createUnnamed(gpa, dir, file, "{\"a\":2}", &why));
    const got = try std.fs.cwd().readFileAlloc(gpa, file, 64);
    try std.testing.expectEqualStrings("{\"a\":1}", got);
    // Nothing else is left in the directory (no temporary name).
    var it = tmp.dir.iterate();
    var n: usize = 0;
    while (try it.next()) |_| n += 1;
    try std.testing.expectEqual(@as(usize, 1), n);
}
