//! The jail spec wire format shared by TypeScript (src/jail/spec.ts) and both backends.
//!
//! A spec is a flat byte buffer: an 8-byte header (magic "LJS1", u32 version) followed by
//! records `u16 tag, u16 reserved(0), u32 len, [len]u8 payload`, all little-endian. Strings
//! carry their terminating NUL inside the payload so the decoder can hand the kernel pointers
//! straight into the caller's buffer: decoding never allocates and never copies.
const std = @import("std");

pub const magic = "LJS1";
pub const version: u32 = 1;

pub const Tag = enum(u16) {
    root_dir = 1, // string: use this directory as the root, as is (seed `-d`)
    lower = 2, // string, repeated bottom to top: world first, then overlays
    upper = 3, // string: writable upper layer (builds); a fresh tmpfs when absent
    work = 4, // string: overlayfs work dir, same filesystem as `upper`
    stage = 5, // string: empty directory the root is assembled on (per mount namespace)
    hostname = 6, // string
    argv = 7, // string, repeated
    env = 8, // string "K=V", repeated
    cwd = 9, // string
    uid = 10, // u32
    gid = 11, // u32
    flags = 12, // u32, see Flags
    caps = 13, // u64 mask of capabilities the payload keeps
    rlimit = 14, // u32 resource, u32 reserved, u64 soft, u64 hard
    mount = 15, // u32 MountFlags, then src NUL dst NUL
    cgroup = 16, // u32 CgroupKind, then dir NUL (Linux: created, limited and joined by the jail's placer; kind join: made ahead, only joined)
    limits = 17, // u64 memory_bytes_max, u64 pids_max, u64 cpu_millis (0 = unlimited)
    stdio = 18, // 3 x i32: fd, or stdio_null, or stdio_pipe
    pass_fd = 19, // i32, repeated: appears in the payload as 3, 4, ...
    tmpfs = 20, // u64 upper_bytes_max, u64 tmp_bytes_max (0 = the default, see `defaults`)
    jail_name = 21, // string (FreeBSD jail name; Linux uses it in error texts only)
    ip4 = 22, // 4 bytes, network order, repeated (FreeBSD ip4.addr)
    ip6 = 23, // 16 bytes, repeated
    iface = 24, // string: interface the FreeBSD address aliases live on
    idmap = 25, // u32 host_uid_base, u32 host_gid_base, u32 count (user namespace, Linux)
    hide = 26, // string, repeated: a host path no jail may see (lightjail's state root)
    net = 27, // 32 bytes: the private address the child wires (Linux, netwire.Wire)
    _,
};

pub const Flags = packed struct(u32) {
    /// Share the host's network namespace / stack (builds that fetch packages).
    net_host: bool = false,
    /// Own network namespace that the owner wires (veth) before releasing the sync pipe.
    net_private: bool = false,
    /// Run the payload in a new session (no controlling terminal: no TIOCSTI).
    new_session: bool = false,
    /// Skip the seccomp filter (debugging only).
    no_seccomp: bool = false,
    /// Mount the `root_dir` read-only.
    root_readonly: bool = false,
    /// Give the payload a writable /tmp tmpfs (default on; off keeps the world's /tmp).
    no_tmp: bool = false,
    /// Run in a new user namespace: root inside maps to an unprivileged host uid (idmap).
    userns: bool = false,
    /// Time every step; the marks ("T step nanoseconds") reach the status pipe with the
    /// setup's hand-over and the keeper's report (benchmarks, `lj spawn --trace`).
    trace: bool = false,
    /// The owner has nothing to do before the payload starts (no network to wire, not held):
    /// the shim puts the go byte in the sync pipe itself and hands the owner no write end.
    go: bool = false,
    _pad: u23 = 0,
};

pub const MountFlags = packed struct(u32) {
    readonly: bool = false,
    /// Create the target (directory, or empty file for a file source) if it is missing.
    create: bool = true,
    /// Read-only binds of a user-namespaced jail: show the source idmapped (host ids
    /// 0..count-1 as themselves inside). Without it, ids outside the namespace show as nobody.
    idmap: bool = false,
    /// The jail's layers' own copies of the target directory merge over the source (an
    /// overlay at the target, lowers: the layers' copies top first, then the source); in a
    /// build (an upper layer) what the jail writes there lands in the upper's copy. A host
    /// world's /usr: an overlay built over it installs packages into itself, not the host.
    layered: bool = false,
    _pad: u28 = 0,
};

pub const stdio_null: i32 = -1;
pub const stdio_pipe: i32 = -2;

pub const max_argv = 1024;
pub const max_env = 1024;
pub const max_lowers = 64;
pub const max_mounts = 64;
pub const max_rlimits = 16;
pub const max_pass_fds = 16;
pub const max_cgroups = 8;
pub const max_addrs = 8;
pub const max_hides = 16;

/// What a jail gets when its spec leaves a limit unset. Applied by `decode`, so every front end
/// (the TypeScript API and `lj spawn`, the native `ljspawn`, jail pools) and both backends
/// apply the same rule, from this one definition.
pub const defaults = struct {
    /// The tmpfs under the jail's writable upper layer and /tmp are each as large as the jail's
    /// memory limit (their pages are charged to it anyway: a full tmpfs says ENOSPC where the
    /// memory cgroup would kill), or this size without one.
    pub const tmpfs_bytes: u64 = 256 << 20;
    /// RLIMIT_NOFILE, soft and hard: the classic soft limit, and room for a program that asks.
    /// The owner's own limit (often raised for a server) is never what a jail inherits.
    pub const nofile_soft: u64 = 1024;
    pub const nofile_hard: u64 = 4096;
};
/// Linux's RLIMIT_NOFILE; specs carry Linux resource numbers (FreeBSD translates them).
pub const rlimit_nofile: u32 = 7;

pub const Mount = struct { flags: MountFlags, src: [:0]const u8, dst: [:0]const u8 };
pub const Rlimit = struct { resource: u32, soft: u64, hard: u64 };
/// `join`: a cgroup its owner made and limited ahead of time; the jail only joins it.
pub const CgroupKind = enum(u32) { unified = 0, memory = 1, pids = 2, cpu = 3, join = 4, _ };
pub const Cgroup = struct { kind: CgroupKind, dir: [:0]const u8 };

/// Strings point into the caller's buffer; the buffer must outlive the Spec.
pub const Spec = struct {
    root_dir: ?[:0]const u8 = null,
    lowers: Bounded([:0]const u8, max_lowers) = .{},
    upper: ?[:0]const u8 = null,
    work: ?[:0]const u8 = null,
    stage: ?[:0]const u8 = null,
    hostname: ?[:0]const u8 = null,
    jail_name: ?[:0]const u8 = null,
    argv: Bounded([*:0]const u8, max_argv) = .{},
    env: Bounded([*:0]const u8, max_env) = .{},
    cwd: [:0]const u8 = "/",
    uid: u32 = 0,
    gid: u32 = 0,
    flags: Flags = .{},
    caps: u64 = 0,
    rlimits: Bounded(Rlimit, max_rlimits) = .{},
    mounts: Bounded(Mount, max_mounts) = .{},
    /// Host paths masked wherever the jail's tree would show them (see hide.zig).
    hides: Bounded([:0]const u8, max_hides) = .{},
    cgroups: Bounded(Cgroup, max_cgroups) = .{},
    memory_bytes_max: u64 = 0,
    pids_max: u64 = 0,
    cpu_millis: u64 = 0,
    stdio: [3]i32 = .{ stdio_null, stdio_null, stdio_null },
    pass_fds: Bounded(i32, max_pass_fds) = .{},
    /// After `decode`: the size caps the backends give the tmpfs mounts (never 0: see `defaults`).
    upper_bytes_max: u64 = 0,
    tmp_bytes_max: u64 = 0,
    ip4: Bounded([4]u8, max_addrs) = .{},
    ip6: Bounded([16]u8, max_addrs) = .{},
    iface: ?[:0]const u8 = null,
    host_uid_base: u32 = 100000,
    host_gid_base: u32 = 100000,
    id_count: u32 = 65536,
    /// A private address for the child to wire (netwire.zig decodes it).
    net_wire: ?*const [net_wire_size]u8 = null,
};

pub const net_wire_size = 32;

/// A fixed-capacity list: the decoder must not allocate.
pub fn Bounded(comptime T: type, comptime cap: usize) type {
    return struct {
        buf: [cap]T = undefined,
        len: usize = 0,
        pub const capacity = cap;
        pub fn append(self: *@This(), v: T) error{TooMany}!void {
            if (self.len == cap) return error.TooMany;
            self.buf[self.len] = v;
            self.len += 1;
        }
        pub fn slice(self: *const @This()) []const T {
            return self.buf[0..self.len];
        }
    };
}

pub const DecodeError = error{ BadHeader, Truncated, BadString, BadLength, TooMany, MissingArgv, RootConflict, MissingStage, BadPayload };

/// What went wrong, for the error text: the record tag that failed, when known.
pub const DecodeFailure = struct { err: DecodeError, tag: u16 };

pub fn decode(buf: []const u8, out: *Spec, failure: *DecodeFailure) DecodeError!void {
    failure.* = .{ .err = error.BadHeader, .tag = 0 };
    if (buf.len < 8 or !std.mem.eql(u8, buf[0..4], magic) or readInt(u32, buf[4..8]) != version)
        return error.BadHeader;
    var pos: usize = 8;
    while (pos < buf.len) {
        if (buf.len - pos < 8) return fail(failure, error.Truncated, 0);
        const tag = readInt(u16, buf[pos..][0..2]);
        const len = readInt(u32, buf[pos + 4 ..][0..4]);
        pos += 8;
        if (buf.len - pos < len) return fail(failure, error.Truncated, tag);
        const p = buf[pos..][0..len];
        pos += len;
        record(out, @enumFromInt(tag), p) catch |e| return fail(failure, e, tag);
    }
    if (out.argv.len == 0) return fail(failure, error.MissingArgv, @intFromEnum(Tag.argv));
    if (out.root_dir != null and out.lowers.len != 0) return fail(failure, error.RootConflict, @intFromEnum(Tag.root_dir));
    if (out.root_dir == null and out.stage == null) return fail(failure, error.MissingStage, @intFromEnum(Tag.stage));
    applyDefaults(out) catch |e| return fail(failure, e, @intFromEnum(Tag.rlimit));
}

/// Fills in what the spec left unset (see `defaults`).
pub fn applyDefaults(s: *Spec) DecodeError!void {
    const size = if (s.memory_bytes_max > 0) s.memory_bytes_max else defaults.tmpfs_bytes;
    if (s.upper_bytes_max == 0) s.upper_bytes_max = size;
    if (s.tmp_bytes_max == 0) s.tmp_bytes_max = size;
    for (s.rlimits.slice()) |r| if (r.resource == rlimit_nofile) return;
    try s.rlimits.append(.{ .resource = rlimit_nofile, .soft = defaults.nofile_soft, .hard = defaults.nofile_hard });
}

/// Decodes a payload record set (argv, env, cwd, uid, gid, caps and the payload's flags) over
/// an already decoded spec: what a pre-made jail runs is decided when it is started.
pub fn decodePayload(buf: []const u8, out: *Spec, failure: *DecodeFailure) DecodeError!void {
    failure.* = .{ .err = error.BadHeader, .tag = 0 };
    if (buf.len < 8 or !std.mem.eql(u8, buf[0..4], magic) or readInt(u32, buf[4..8]) != version)
        return error.BadHeader;
    out.argv.len = 0;
    out.env.len = 0;
    out.cwd = "/";
    out.caps = 0;
    var pos: usize = 8;
    while (pos < buf.len) {
        if (buf.len - pos < 8) return fail(failure, error.Truncated, 0);
        const tag: Tag = @enumFromInt(readInt(u16, buf[pos..][0..2]));
        const len = readInt(u32, buf[pos + 4 ..][0..4]);
        pos += 8;
        if (buf.len - pos < len) return fail(failure, error.Truncated, @intFromEnum(tag));
        const p = buf[pos..][0..len];
        pos += len;
        switch (tag) {
            .argv, .env, .cwd, .uid, .gid, .caps => record(out, tag, p) catch |e| return fail(failure, e, @intFromEnum(tag)),
            .flags => {
                // Only the payload's own flags; how the jail is built was fixed at spawn.
                const f: Flags = @bitCast(int(u32, p) catch |e| return fail(failure, e, @intFromEnum(tag)));
                out.flags.new_session = f.new_session;
                out.flags.no_seccomp = f.no_seccomp;
            },
            else => return fail(failure, error.BadPayload, @intFromEnum(tag)),
        }
    }
    if (out.argv.len == 0) return fail(failure, error.MissingArgv, @intFromEnum(Tag.argv));
}

fn fail(failure: *DecodeFailure, err: DecodeError, tag: u16) DecodeError {
    failure.* = .{ .err = err, .tag = tag };
    return err;
}

fn record(out: *Spec, tag: Tag, p: []const u8) DecodeError!void {
    switch (tag) {
        .root_dir => out.root_dir = try str(p),
        .lower => try out.lowers.append(try str(p)),
        .upper => out.upper = try str(p),
        .work => out.work = try str(p),
        .stage => out.stage = try str(p),
        .hostname => out.hostname = try str(p),
        .jail_name => out.jail_name = try str(p),
        .argv => try out.argv.append((try str(p)).ptr),
        .env => try out.env.append((try str(p)).ptr),
        .cwd => out.cwd = try str(p),
        .uid => out.uid = try int(u32, p),
        .gid => out.gid = try int(u32, p),
        .flags => out.flags = @bitCast(try int(u32, p)),
        .caps => out.caps = try int(u64, p),
        .rlimit => {
            if (p.len != 24) return error.BadLength;
            try out.rlimits.append(.{
                .resource = readInt(u32, p[0..4]),
                .soft = readInt(u64, p[8..16]),
                .hard = readInt(u64, p[16..24]),
            });
        },
        .mount => {
            if (p.len < 4) return error.BadLength;
            const pair = try strPair(p[4..]);
            try out.mounts.append(.{ .flags = @bitCast(readInt(u32, p[0..4])), .src = pair[0], .dst = pair[1] });
        },
        .cgroup => {
            if (p.len < 4) return error.BadLength;
            try out.cgroups.append(.{ .kind = @enumFromInt(readInt(u32, p[0..4])), .dir = try str(p[4..]) });
        },
        .limits => {
            if (p.len != 24) return error.BadLength;
            out.memory_bytes_max = readInt(u64, p[0..8]);
            out.pids_max = readInt(u64, p[8..16]);
            out.cpu_millis = readInt(u64, p[16..24]);
        },
        .stdio => {
            if (p.len != 12) return error.BadLength;
            for (&out.stdio, 0..) |*s, i| s.* = readInt(i32, p[i * 4 ..][0..4]);
        },
        .pass_fd => try out.pass_fds.append(try int(i32, p)),
        .tmpfs => {
            if (p.len != 16) return error.BadLength;
            out.upper_bytes_max = readInt(u64, p[0..8]);
            out.tmp_bytes_max = readInt(u64, p[8..16]);
        },
        .ip4 => {
            if (p.len != 4) return error.BadLength;
            try out.ip4.append(p[0..4].*);
        },
        .ip6 => {
            if (p.len != 16) return error.BadLength;
            try out.ip6.append(p[0..16].*);
        },
        .iface => out.iface = try str(p),
        .hide => try out.hides.append(try str(p)),
        .net => {
            if (p.len != net_wire_size) return error.BadLength;
            out.net_wire = p[0..net_wire_size];
        },
        .idmap => {
            if (p.len != 12) return error.BadLength;
            out.host_uid_base = readInt(u32, p[0..4]);
            out.host_gid_base = readInt(u32, p[4..8]);
            out.id_count = readInt(u32, p[8..12]);
        },
        // Unknown tags from a newer encoder are skipped: old shims keep working.
        _ => {},
    }
}

fn readInt(comptime T: type, b: *const [@sizeOf(T)]u8) T {
    return std.mem.readInt(T, b, .little);
}

fn int(comptime T: type, p: []const u8) DecodeError!T {
    if (p.len != @sizeOf(T)) return error.BadLength;
    return readInt(T, p[0..@sizeOf(T)]);
}

/// A NUL-terminated string with no interior NUL.
fn str(p: []const u8) DecodeError![:0]const u8 {
    if (p.len == 0 or p[p.len - 1] != 0) return error.BadString;
    const s = p[0 .. p.len - 1 :0];
    if (std.mem.indexOfScalar(u8, s, 0) != null) return error.BadString;
    return s;
}

fn strPair(p: []const u8) DecodeError![2][:0]const u8 {
    const nul = std.mem.indexOfScalar(u8, p, 0) orelse return error.BadString;
    return .{ try str(p[0 .. nul + 1]), try str(p[nul + 1 ..]) };
}

// ---------------------------------------------------------------------------------------
// Tests: an encoder mirroring src/jail/spec.ts, so both sides agree on the bytes.

/// Writes specs (the native ljspawn, and the tests; TypeScript has its own in src/jail/spec.ts).
pub const Encoder = struct {
    list: std.ArrayList(u8) = .empty,
    gpa: std.mem.Allocator,

    pub fn init(gpa: std.mem.Allocator) !Encoder {
        var e = Encoder{ .gpa = gpa };
        try e.list.appendSlice(gpa, magic);
        try e.list.appendSlice(gpa, &std.mem.toBytes(std.mem.nativeToLittle(u32, version)));
        return e;
    }
    pub fn deinit(self: *Encoder) void {
        self.list.deinit(self.gpa);
    }
    fn header(self: *Encoder, tag: Tag, len: usize) !void {
        var h: [8]u8 = undefined;
        std.mem.writeInt(u16, h[0..2], @intFromEnum(tag), .little);
        std.mem.writeInt(u16, h[2..4], 0, .little);
        std.mem.writeInt(u32, h[4..8], @intCast(len), .little);
        try self.list.appendSlice(self.gpa, &h);
    }
    pub fn raw(self: *Encoder, tag: Tag, payload: []const u8) !void {
        try self.header(tag, payload.len);
        try self.list.appendSlice(self.gpa, payload);
    }
    /// A string record: the NUL goes inside the payload.
    pub fn string(self: *Encoder, tag: Tag, s: []const u8) !void {
        try self.header(tag, s.len + 1);
        try self.list.appendSlice(self.gpa, s);
        try self.list.append(self.gpa, 0);
    }
    pub fn int(self: *Encoder, tag: Tag, comptime T: type, v: T) !void {
        var tmp: [@sizeOf(T)]u8 = undefined;
        std.mem.writeInt(T, &tmp, v, .little);
        try self.raw(tag, &tmp);
    }
    /// A u32 head followed by one string (cgroup records).
    pub fn headed(self: *Encoder, tag: Tag, head: u32, a: []const u8) !void {
        try self.header(tag, 4 + a.len + 1);
        var h: [4]u8 = undefined;
        std.mem.writeInt(u32, &h, head, .little);
        try self.list.appendSlice(self.gpa, &h);
        try self.list.appendSlice(self.gpa, a);
        try self.list.append(self.gpa, 0);
    }
    /// A u32 head followed by two strings (mount records).
    pub fn pair(self: *Encoder, tag: Tag, head: u32, a: []const u8, b: []const u8) !void {
        try self.header(tag, 4 + a.len + 1 + b.len + 1);
        var h: [4]u8 = undefined;
        std.mem.writeInt(u32, &h, head, .little);
        try self.list.appendSlice(self.gpa, &h);
        try self.list.appendSlice(self.gpa, a);
        try self.list.append(self.gpa, 0);
        try self.list.appendSlice(self.gpa, b);
        try self.list.append(self.gpa, 0);
    }
    pub fn bytes(self: *const Encoder) []const u8 {
        return self.list.items;
    }
};

test "decode a full spec" {
    var e = try Encoder.init(std.testing.allocator);
    defer e.deinit();
    try e.string(.stage, "/lj/run/stage");
    try e.string(.lower, "/lj/worlds/w");
    try e.string(.lower, "/lj/languages/x");
    try e.string(.argv, "/bin/sh");
    try e.string(.argv, "-c");
    try e.string(.env, "A=1");
    try e.string(.hostname, "box");
    try e.int(.uid, u32, 65534);
    try e.int(.flags, u32, @bitCast(Flags{ .net_host = true }));
    try e.pair(.mount, 1, "/src", "/dst");
    try e.pair(.mount, @bitCast(MountFlags{ .readonly = true, .idmap = true }), "/usr", "/usr");
    try e.headed(.cgroup, 1, "/sys/fs/cgroup/memory/lj/1");
    var stdio: [12]u8 = undefined;
    for ([_]i32{ 0, stdio_pipe, stdio_null }, 0..) |v, i| std.mem.writeInt(i32, stdio[i * 4 ..][0..4], v, .little);
    try e.raw(.stdio, &stdio);
    try e.raw(@enumFromInt(99), "future"); // unknown tags are skipped
    var s = Spec{};
    var f: DecodeFailure = undefined;
    try decode(e.bytes(), &s, &f);
    try std.testing.expectEqual(@as(usize, 2), s.lowers.len);
    try std.testing.expectEqualStrings("/lj/languages/x", s.lowers.slice()[1]);
    try std.testing.expectEqualStrings("-c", std.mem.span(s.argv.slice()[1]));
    try std.testing.expectEqual(@as(u32, 65534), s.uid);
    try std.testing.expect(s.flags.net_host);
    try std.testing.expect(s.mounts.slice()[0].flags.readonly);
    try std.testing.expectEqualStrings("/dst", s.mounts.slice()[0].dst);
    try std.testing.expect(!s.mounts.slice()[0].flags.idmap);
    try std.testing.expect(s.mounts.slice()[1].flags.idmap and s.mounts.slice()[1].flags.readonly);
    try std.testing.expectEqual(CgroupKind.memory, s.cgroups.slice()[0].kind);
    try std.testing.expectEqualStrings("/sys/fs/cgroup/memory/lj/1", s.cgroups.slice()[0].dir);
    try std.testing.expectEqual([3]i32{ 0, stdio_pipe, stdio_null }, s.stdio);
}

test "decode rejects malformed input with the failing tag" {
    var s = Spec{};
    var f: DecodeFailure = undefined;
    try std.testing.expectError(error.BadHeader, decode("LJS2\x01\x00\x00\x00", &s, &f));

    var e = try Encoder.init(std.testing.allocator);
    defer e.deinit();
    try e.string(.stage, "/s");
    try e.raw(.argv, "no-nul");
    s = .{};
    try std.testing.expectError(error.BadString, decode(e.bytes(), &s, &f));
    try std.testing.expectEqual(@as(u16, @intFromEnum(Tag.argv)), f.tag);

    e.deinit();
    e = try Encoder.init(std.testing.allocator);
    try e.string(.stage, "/s");
    s = .{};
    try std.testing.expectError(error.MissingArgv, decode(e.bytes(), &s, &f));

    e.deinit();
    e = try Encoder.init(std.testing.allocator);
    try e.string(.argv, "x");
    try e.raw(.uid, "\x01\x02");
    s = .{};
    try std.testing.expectError(error.BadLength, decode(e.bytes(), &s, &f));

    e.deinit();
    e = try Encoder.init(std.testing.allocator);
    try e.string(.argv, "x");
    const full = e.bytes();
    s = .{};
    try std.testing.expectError(error.Truncated, decode(full[0 .. full.len - 1], &s, &f));
}

test "a spec that sets no limits gets the defaults; one that does keeps its own" {
    var e = try Encoder.init(std.testing.allocator);
    defer e.deinit();
    try e.string(.stage, "/s");
    try e.string(.argv, "x");
    var s = Spec{};
    var f: DecodeFailure = undefined;
    try decode(e.bytes(), &s, &f);
    try std.testing.expectEqual(defaults.tmpfs_bytes, s.upper_bytes_max);
    try std.testing.expectEqual(defaults.tmpfs_bytes, s.tmp_bytes_max);
    try std.testing.expectEqual(@as(usize, 1), s.rlimits.len);
    try std.testing.expectEqual(Rlimit{ .resource = rlimit_nofile, .soft = 1024, .hard = 4096 }, s.rlimits.slice()[0]);

    // With a memory limit the tmpfs sizes follow it; given sizes and a given nofile stay.
    var lim: [24]u8 = std.mem.zeroes([24]u8);
    std.mem.writeInt(u64, lim[0..8], 64 << 20, .little);
    try e.raw(.limits, &lim);
    var rl: [24]u8 = std.mem.zeroes([24]u8);
    std.mem.writeInt(u32, rl[0..4], rlimit_nofile, .little);
    std.mem.writeInt(u64, rl[8..16], 50, .little);
    std.mem.writeInt(u64, rl[16..24], 60, .little);
    try e.raw(.rlimit, &rl);
    s = .{};
    try decode(e.bytes(), &s, &f);
    try std.testing.expectEqual(@as(u64, 64 << 20), s.upper_bytes_max);
    try std.testing.expectEqual(@as(u64, 64 << 20), s.tmp_bytes_max);
    try std.testing.expectEqual(@as(usize, 1), s.rlimits.len);
    try std.testing.expectEqual(@as(u64, 50), s.rlimits.slice()[0].soft);
    var sizes: [16]u8 = undefined;
    std.mem.writeInt(u64, sizes[0..8], 1 << 20, .little);
    std.mem.writeInt(u64, sizes[8..16], 0, .little);
    try e.raw(.tmpfs, &sizes);
    s = .{};
    try decode(e.bytes(), &s, &f);
    try std.testing.expectEqual(@as(u64, 1 << 20), s.upper_bytes_max);
    try std.testing.expectEqual(@as(u64, 64 << 20), s.tmp_bytes_max);
}

test "a payload replaces what runs, and only that" {
    var e = try Encoder.init(std.testing.allocator);
    defer e.deinit();
    try e.string(.stage, "/s");
    try e.string(.lower, "/w");
    try e.string(.argv, "/placeholder");
    try e.string(.env, "OLD=1");
    var s = Spec{};
    var f: DecodeFailure = undefined;
    try decode(e.bytes(), &s, &f);

    var p = try Encoder.init(std.testing.allocator);
    defer p.deinit();
    try p.string(.argv, "/bin/echo");
    try p.string(.argv, "hi");
    try p.string(.env, "A=2");
    try p.int(.uid, u32, 65534);
    try p.int(.flags, u32, @bitCast(Flags{ .new_session = true, .net_host = true }));
    try decodePayload(p.bytes(), &s, &f);
    try std.testing.expectEqual(@as(usize, 2), s.argv.len);
    try std.testing.expectEqualStrings("hi", std.mem.span(s.argv.slice()[1]));
    try std.testing.expectEqual(@as(usize, 1), s.env.len);
    try std.testing.expectEqual(@as(u32, 65534), s.uid);
    try std.testing.expect(s.flags.new_session);
    try std.testing.expect(!s.flags.net_host); // the jail's network was fixed at spawn
    try std.testing.expectEqualStrings("/w", s.lowers.slice()[0]);

    var bad = try Encoder.init(std.testing.allocator);
    defer bad.deinit();
    try bad.string(.argv, "/x");
    try bad.string(.lower, "/elsewhere");
    try std.testing.expectError(error.BadPayload, decodePayload(bad.bytes(), &s, &f));
}
