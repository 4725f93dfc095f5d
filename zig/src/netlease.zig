//! The native ljspawn's side of a root's private addresses: the root's names (table, veth
//! prefix), its subnet, the machine-wide registry of live roots and the address leases, in the
//! same files and formats as src/jail/net-alloc.ts and src/jail/net-registry.ts, so that jails
//! of both front ends share one root without ever sharing an address. Anything out of the
//! ordinary (a configuration to word an error about, a conflict, a stale lease to reclaim, a
//! full subnet, no table yet) is left to the TypeScript CLI: `error.Delegate`.
const std = @import("std");
const linux = std.os.linux;

const Allocator = std.mem.Allocator;
pub const Delegate = error{Delegate};

pub const default_subnet = "10.233.0.0/16";
const registry_dir = "/run/lightjail/roots";
const registry_lock = "/run/lightjail/roots.lock";

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
        const v = std.fmt.parseInt(u8, part, 10) catch return null;
        out = (out << 8) | v;
    }
    return if (n == 4) out else null;
}

/// As parseSubnet in net-alloc.ts: /8 to /29, no host bits.
pub fn parseSubnet(cidr: []const u8) ?Subnet {
    const slash = std.mem.indexOfScalar(u8, cidr, '/') orelse return null;
    const ip = parseIp(cidr[0..slash]) orelse return null;
    const prefix = std.fmt.parseInt(u8, cidr[slash + 1 ..], 10) catch return null;
    if (prefix < 8 or prefix > 29 or ip & mask(prefix) != ip) return null;
    return .{ .network = ip, .prefix = prefix, .cidr = cidr };
}

pub fn formatIp(buf: *[16]u8, ip: u32) []const u8 {
    return std.fmt.bufPrint(buf, "{d}.{d}.{d}.{d}", .{ ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255 }) catch unreachable;
}

pub fn ipBytes(ip: u32) [4]u8 {
    var b: [4]u8 = undefined;
    std.mem.writeInt(u32, &b, ip, .big);
    return b;
}

/// A root's network identity and configuration (netConfig in net-alloc.ts).
pub const Config = struct {
    root: []const u8,
    /// sha256 of the root's real path, in hex.
    hash: [64]u8,
    subnet: Subnet,
    /// "lightjail_<12 hex>" (family inet).
    table: [22]u8,
    /// "ljn<4 hex>"
    prefix: [7]u8,
    dir: []const u8,
};

/// The subnet: LJ_SUBNET, else `[net] subnet` in config.toml, else the default.
fn subnetText(gpa: Allocator, root: []const u8) ![]const u8 {
    if (std.posix.getenv("LJ_SUBNET")) |v| if (v.len > 0) return v;
    const file = try std.fs.path.join(gpa, &.{ root, "config.toml" });
    const text = std.fs.cwd().readFileAlloc(gpa, file, 1 << 20) catch return default_subnet;
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
        if (v.len < 2 or v[0] != '"' or std.mem.lastIndexOfScalar(u8, v, '"') == 0) return error.Delegate;
        return v[1..std.mem.lastIndexOfScalar(u8, v, '"').?];
    }
    return default_subnet;
}

pub fn config(gpa: Allocator, root_in: []const u8) !Config {
    const root = std.fs.cwd().realpathAlloc(gpa, root_in) catch try std.fs.path.resolve(gpa, &.{root_in});
    var digest: [32]u8 = undefined;
    std.crypto.hash.sha2.Sha256.hash(root, &digest, .{});
    var c = Config{ .root = root, .hash = undefined, .subnet = undefined, .table = undefined, .prefix = undefined, .dir = try std.fs.path.join(gpa, &.{ root_in, "run", "net" }) };
    _ = std.fmt.bufPrint(&c.hash, "{x}", .{&digest}) catch unreachable;
    _ = std.fmt.bufPrint(&c.table, "lightjail_{s}", .{c.hash[0..12]}) catch unreachable;
    _ = std.fmt.bufPrint(&c.prefix, "ljn{s}", .{c.hash[0..4]}) catch unreachable;
    c.subnet = parseSubnet(try subnetText(gpa, root_in)) orelse return error.Delegate;
    return c;
}

/// "<pid>.<start time>" of this process (ownerId in cgroup.ts).
pub fn ownerId(gpa: Allocator) ![]const u8 {
    const pid = linux.getpid();
    const start = startTime(gpa, pid) orelse return error.Delegate;
    return std.fmt.allocPrint(gpa, "{d}.{s}", .{ pid, start });
}

fn startTime(gpa: Allocator, pid: i32) ?[]const u8 {
    var pbuf: [32]u8 = undefined;
    const path = std.fmt.bufPrint(&pbuf, "/proc/{d}/stat", .{pid}) catch return null;
    const stat = std.fs.cwd().readFileAlloc(gpa, path, 4096) catch return null;
    const close = std.mem.lastIndexOfScalar(u8, stat, ')') orelse return null;
    var it = std.mem.tokenizeScalar(u8, stat[close + 2 ..], ' ');
    var n: usize = 0;
    var state: []const u8 = "";
    while (it.next()) |f| : (n += 1) {
        if (n == 0) state = f;
        if (n == 19) return if (std.mem.eql(u8, state, "Z") or std.mem.eql(u8, state, "X")) null else f;
    }
    return null;
}

/// True while the process named "<pid>.<start>" lives (ownerAlive in net-alloc.ts).
pub fn ownerAlive(gpa: Allocator, owner: []const u8) bool {
    const dot = std.mem.indexOfScalar(u8, owner, '.') orelse return false;
    const pid = std.fmt.parseInt(i32, owner[0..dot], 10) catch return false;
    if (pid <= 0) return false;
    const now = startTime(gpa, pid) orelse return false;
    return std.mem.eql(u8, now, owner[dot + 1 ..]);
}

// ---------------------------------------------------------------------------------------
// The registry of live roots (net-registry.ts): refuse nothing here, delegate instead.

pub const Registration = struct { file: []const u8 };

const Entry = struct { root: []const u8, subnet: []const u8, vethPrefix: []const u8 = "", owner: []const u8 };

fn overlaps(a: Subnet, b: Subnet) bool {
    const p = @min(a.prefix, b.prefix);
    return a.network & mask(p) == b.network & mask(p);
}

/// Registers this process as live with cfg's root and subnet, under the registry's lock; a
/// conflict with another live root (or this root live with another subnet) delegates, for the
/// TypeScript CLI to word.
pub fn register(gpa: Allocator, cfg: *const Config, owner: []const u8) !Registration {
    std.fs.cwd().makePath(registry_dir) catch return error.Delegate;
    const lock = std.fs.cwd().createFile(registry_lock, .{ .truncate = false, .mode = 0o600 }) catch return error.Delegate;
    defer lock.close();
    std.posix.flock(lock.handle, std.posix.LOCK.EX) catch return error.Delegate;
    var dir = std.fs.cwd().openDir(registry_dir, .{ .iterate = true }) catch return error.Delegate;
    defer dir.close();
    var it = dir.iterate();
    while (it.next() catch return error.Delegate) |e| {
        const text = dir.readFileAlloc(gpa, e.name, 1 << 16) catch continue;
        const entry = std.json.parseFromSliceLeaky(Entry, gpa, text, .{ .ignore_unknown_fields = true }) catch continue;
        if (!ownerAlive(gpa, entry.owner)) continue;
        if (std.mem.eql(u8, entry.root, cfg.root)) {
            if (!std.mem.eql(u8, entry.subnet, cfg.subnet.cidr)) return error.Delegate;
            continue;
        }
        const theirs = parseSubnet(entry.subnet) orelse continue;
        if (overlaps(theirs, cfg.subnet) or std.mem.eql(u8, entry.vethPrefix, &cfg.prefix)) return error.Delegate;
    }
    const name = try std.fmt.allocPrint(gpa, "{s}.{s}", .{ cfg.hash[0..16], owner });
    const body = try std.fmt.allocPrint(gpa, "{f}", .{std.json.fmt(Entry{ .root = cfg.root, .subnet = cfg.subnet.cidr, .vethPrefix = &cfg.prefix, .owner = owner }, .{})});
    dir.writeFile(.{ .sub_path = name, .data = body, .flags = .{ .mode = 0o600 } }) catch return error.Delegate;
    return .{ .file = try std.fs.path.join(gpa, &.{ registry_dir, name }) };
}

pub fn unregister(r: Registration) void {
    std.fs.cwd().deleteFile(r.file) catch {};
}

// ---------------------------------------------------------------------------------------
// Leases (acquireLease in net-alloc.ts): a file per address, made with link(2).

pub const Lease = struct {
    address: u32,
    veth: [15]u8,
    file: []const u8,
};

pub fn vethName(cfg: *const Config, ip: u32) [15]u8 {
    var out: [15]u8 = undefined;
    _ = std.fmt.bufPrint(&out, "{s}{x:0>8}", .{ &cfg.prefix, ip }) catch unreachable;
    return out;
}

fn exists(path: []const u8) bool {
    std.fs.cwd().access(path, .{}) catch return false;
    return true;
}

/// Takes `requested` ("auto", or ADDR[/PREFIX] in the subnet). An address held by anyone
/// (live or not: a dead owner's lease is the TypeScript side's to reclaim) or whose veth is
/// still there is skipped ("auto") or delegated (an explicit one, for its error).
pub fn acquire(gpa: Allocator, cfg: *const Config, owner: []const u8, jail: []const u8, requested: []const u8) !Lease {
    const leases = try std.fs.path.join(gpa, &.{ cfg.dir, "leases" });
    std.fs.cwd().makePath(leases) catch return error.Delegate;
    const s = cfg.subnet;
    if (!std.mem.eql(u8, requested, "auto")) {
        const addr = requested[0 .. std.mem.indexOfScalar(u8, requested, '/') orelse requested.len];
        const ip = parseIp(addr) orelse return error.Delegate;
        if (std.mem.indexOfScalar(u8, requested, '/')) |sl| {
            const p = std.fmt.parseInt(u8, requested[sl + 1 ..], 10) catch return error.Delegate;
            if (p != s.prefix) return error.Delegate;
        }
        if (ip & mask(s.prefix) != s.network or ip < s.first() or ip > s.last()) return error.Delegate;
        return (try take(gpa, cfg, leases, owner, jail, ip)) orelse error.Delegate;
    }
    var taken = std.AutoHashMap(u32, void).init(gpa);
    var dir = std.fs.cwd().openDir(leases, .{ .iterate = true }) catch return error.Delegate;
    defer dir.close();
    var it = dir.iterate();
    while (it.next() catch return error.Delegate) |e| if (parseIp(e.name)) |ip| try taken.put(ip, {});
    var ip = s.first();
    while (ip <= s.last()) : (ip += 1) {
        if (taken.contains(ip)) continue;
        if (try take(gpa, cfg, leases, owner, jail, ip)) |l| return l;
    }
    return error.Delegate; // full, but for leases of dead owners: the TypeScript side reclaims
}

var tmp_seq: u32 = 0;

fn take(gpa: Allocator, cfg: *const Config, leases: []const u8, owner: []const u8, jail: []const u8, ip: u32) !?Lease {
    var abuf: [16]u8 = undefined;
    const addr = formatIp(&abuf, ip);
    const veth = vethName(cfg, ip);
    const body = try std.fmt.allocPrint(gpa, "{{\"address\":\"{s}\",\"owner\":\"{s}\",\"jail\":\"{s}\",\"veth\":\"{s}\",\"egress\":false,\"links\":[]}}", .{ addr, owner, jail, &veth });
    tmp_seq += 1;
    const tmp = try std.fmt.allocPrint(gpa, "{s}/.tmp.{d}.n{d}", .{ cfg.dir, linux.getpid(), tmp_seq });
    std.fs.cwd().writeFile(.{ .sub_path = tmp, .data = body, .flags = .{ .mode = 0o600 } }) catch return error.Delegate;
    defer std.fs.cwd().deleteFile(tmp) catch {};
    const file = try std.fs.path.join(gpa, &.{ leases, addr });
    std.posix.link(tmp, file) catch |e| switch (e) {
        error.PathAlreadyExists => return null,
        else => return error.Delegate,
    };
    // A veth of ours without a live lease is a leftover lj gc has not removed yet.
    var sys_path: [64]u8 = undefined;
    if (exists(std.fmt.bufPrint(&sys_path, "/sys/class/net/{s}", .{&veth}) catch unreachable)) {
        std.fs.cwd().deleteFile(file) catch {};
        return null;
    }
    return .{ .address = ip, .veth = veth, .file = file };
}

pub fn drop(l: Lease) void {
    std.fs.cwd().deleteFile(l.file) catch {};
}

test "subnets and names as net-alloc.ts makes them" {
    const s = parseSubnet("10.233.0.0/16").?;
    try std.testing.expectEqual(@as(u32, 0x0ae90001), s.gateway());
    try std.testing.expectEqual(@as(u32, 0x0ae9fffe), s.last());
    try std.testing.expect(parseSubnet("10.233.0.1/16") == null);
    try std.testing.expect(parseSubnet("10.233.0.0/30") == null);
    try std.testing.expect(overlaps(parseSubnet("10.233.0.0/16").?, parseSubnet("10.233.5.0/24").?));
    try std.testing.expect(!overlaps(parseSubnet("10.233.0.0/16").?, parseSubnet("10.234.0.0/16").?));
    var c: Config = undefined;
    c.prefix = "ljn3f2a".*;
    try std.testing.expectEqualStrings("ljn3f2a0ae90002", &vethName(&c, 0x0ae90002));
}
