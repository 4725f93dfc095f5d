//! The native `ljspawn`: the seed's command, without a JavaScript runtime to start.
//!
//! A cold `lj spawn` pays for starting Bun and loading the CLI before the jail even begins;
//! this front end calls the Linux backend directly. It handles the common flags (the seed's
//! `-d -p -n -0 -m -i`, worlds, overlays, limits, mounts, environment) exactly as `lj spawn`
//! does, and hands everything else (egress, links, user namespaces, and any argument it does
//! not accept) to the TypeScript CLI, which then also words every usage error. So there is one
//! definition of the command's behaviour, and this file is its fast path. A private address
//! (`-i ADDR|auto`) is leased in the root's lease files (netlease.zig) and wired by the same
//! code as every jail's (netwire.zig); when something needs more (the root's filter table not
//! made yet, a conflict, a stale lease) the TypeScript CLI takes over.
const std = @import("std");

/// A failed safety check ends only the process it happens in, at once (see panic.zig).
pub const panic = std.debug.FullPanic(@import("panic.zig").handler);
const linux = std.os.linux;
const sys = @import("sys.zig");
const W_ALL = sys.W_ALL;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const backend = @import("linux.zig");
const netlease = @import("netlease.zig");
const netwire = @import("netwire.zig");
const ended = @import("ended.zig");
const cgroup_layout = @import("cgroup_layout.zig");

const Allocator = std.mem.Allocator;

const Mount = struct { src: []const u8, dst: []const u8, readonly: bool, layered: bool = false };

const Args = struct {
    root: ?[]const u8 = null,
    script: ?[]const u8 = null,
    argv: []const []const u8 = &.{},
    name: ?[]const u8 = null,
    uid: u32 = 0,
    gid: u32 = 0,
    memory_mb: u64 = 0,
    world: ?[]const u8 = null,
    overlays: std.ArrayList([]const u8) = .empty,
    upper: ?[]const u8 = null,
    read_only: bool = false,
    net_host: bool = false,
    /// -i: "auto" or ADDR[/PREFIX] (a private address).
    address: ?[]const u8 = null,
    env: std.ArrayList([]const u8) = .empty,
    mounts: std.ArrayList(Mount) = .empty,
    pids: u64 = 0,
    cpu_millis: u64 = 0,
    timeout_ms: u64 = 0,
    caps: u64 = 0,
    cwd: []const u8 = "/",
    json: bool = false,
};

/// Not for the fast path: let the TypeScript CLI handle (or reject) these arguments.
const Delegate = error{Delegate};

fn positive(v: []const u8) Delegate!u64 {
    const n = std.fmt.parseInt(u64, v, 10) catch return error.Delegate;
    if (n == 0) return error.Delegate;
    return n;
}

fn millis(v: []const u8) Delegate!u64 {
    const f = std.fmt.parseFloat(f64, v) catch return error.Delegate;
    if (!(f > 0) or !std.math.isFinite(f)) return error.Delegate;
    return @intFromFloat(@round(f * 1000));
}

const cap_names = [_][]const u8{ "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP" };

/// One flag of the table both front ends read (spawn-flags.txt; src/cli/spawn-args.ts reads it
/// too): whether it takes a value, and whether this binary handles it or hands over.
const Flag = struct { name: []const u8, takes_value: bool, native: bool };

const flag_table: []const Flag = blk: {
    const table = @import("table.zig").rows(@embedFile("spawn-flags.txt"), 3);
    var out: [table.len]Flag = undefined;
    for (table, &out) |row, *f| {
        if (!std.mem.eql(u8, row[2], "both") and !std.mem.eql(u8, row[2], "ts")) @compileError("spawn-flags.txt: " ++ row[0]);
        f.* = .{ .name = row[0], .takes_value = !std.mem.eql(u8, row[1], "-"), .native = std.mem.eql(u8, row[2], "both") };
    }
    const final = out;
    break :blk &final;
};

fn lookup(name: []const u8) ?Flag {
    for (flag_table) |f| if (eql(f.name, name)) return f;
    return null;
}

fn parse(gpa: Allocator, raw: []const []const u8) (Delegate || Allocator.Error)!Args {
    var a = Args{};
    var i: usize = 0;
    while (i < raw.len) : (i += 1) {
        const arg = raw[i];
        if (eql(arg, "--")) {
            a.argv = raw[i + 1 ..];
            break;
        }
        // --flag=value, or the flag alone (its value, if it takes one, is the next argument).
        var flag = arg;
        var inline_value: ?[]const u8 = null;
        if (std.mem.startsWith(u8, arg, "--")) if (std.mem.indexOfScalar(u8, arg, '=')) |eq| {
            flag = arg[0..eq];
            inline_value = arg[eq + 1 ..];
        };
        // Unknown flags, and the ones only the TypeScript CLI handles, go there whole.
        const f = lookup(flag) orelse return error.Delegate;
        if (!f.native) return error.Delegate;
        var value: []const u8 = "";
        if (f.takes_value) {
            value = inline_value orelse blk: {
                if (i + 1 >= raw.len) return error.Delegate;
                i += 1;
                break :blk raw[i];
            };
        } else if (inline_value != null) return error.Delegate;

        if (eql(flag, "-0")) {
            a.uid = 65534;
            a.gid = 65534;
        } else if (eql(flag, "--read-only")) {
            a.read_only = true;
        } else if (eql(flag, "--json")) {
            a.json = true;
        } else if (eql(flag, "--debug")) {
            // Stack traces are the TypeScript CLI's; here errors are one line anyway.
        } else if (eql(flag, "-d")) {
            a.root = value;
        } else if (eql(flag, "-p")) {
            a.script = value;
        } else if (eql(flag, "-n")) {
            a.name = value;
        } else if (eql(flag, "-m")) {
            a.memory_mb = try positive(value);
        } else if (eql(flag, "--world")) {
            a.world = value;
        } else if (eql(flag, "--overlay")) {
            try a.overlays.append(gpa, value);
        } else if (eql(flag, "--upper")) {
            a.upper = value;
        } else if (eql(flag, "--net")) {
            if (eql(value, "host")) a.net_host = true else if (!eql(value, "none")) return error.Delegate;
        } else if (eql(flag, "-i")) {
            a.address = value;
        } else if (eql(flag, "--env")) {
            const eq = std.mem.indexOfScalar(u8, value, '=') orelse return error.Delegate;
            if (eq == 0) return error.Delegate;
            try a.env.append(gpa, value);
        } else if (eql(flag, "--mount")) {
            var it = std.mem.splitScalar(u8, value, ':');
            const src = it.next() orelse return error.Delegate;
            const dst = it.next() orelse return error.Delegate;
            const mode = it.next();
            if (it.next() != null or src.len == 0 or dst.len == 0 or dst[0] != '/') return error.Delegate;
            if (mode != null and !eql(mode.?, "ro") and !eql(mode.?, "rw")) return error.Delegate;
            try a.mounts.append(gpa, .{ .src = src, .dst = dst, .readonly = mode != null and eql(mode.?, "ro") });
        } else if (eql(flag, "--pids")) {
            a.pids = try positive(value);
        } else if (eql(flag, "--cpus")) {
            a.cpu_millis = try millis(value);
        } else if (eql(flag, "--timeout")) {
            a.timeout_ms = try millis(value);
        } else if (eql(flag, "--cwd")) {
            a.cwd = value;
        } else if (eql(flag, "--cap")) {
            const name = if (std.ascii.startsWithIgnoreCase(value, "CAP_")) value[4..] else value;
            const idx = for (cap_names, 0..) |c, n| {
                if (std.ascii.eqlIgnoreCase(c, name)) break n;
            } else return error.Delegate;
            a.caps |= @as(u64, 1) << @intCast(idx);
        } else if (eql(flag, "--user")) {
            var it = std.mem.splitScalar(u8, value, ':');
            a.uid = std.fmt.parseInt(u32, it.next().?, 10) catch return error.Delegate;
            a.gid = if (it.next()) |g| std.fmt.parseInt(u32, g, 10) catch return error.Delegate else a.uid;
        } else {
            // A flag the table marks as handled here but this switch does not know.
            return error.Delegate;
        }
    }
    const has_cmd = a.argv.len > 0;
    if ((a.script != null) == has_cmd) return error.Delegate;
    if (a.root != null and (a.world != null or a.overlays.items.len > 0)) return error.Delegate;
    if (a.read_only and a.root == null) return error.Delegate;
    if (a.address != null and a.net_host) return error.Delegate;
    return a;
}

fn eql(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

// ---------------------------------------------------------------------------------------
// Where things are: the same layout as src/store/paths.ts and src/store/worlds.ts.

fn ljRoot() []const u8 {
    const v = std.posix.getenv("LIGHTJAIL_ROOT") orelse return "/usr/local/lj";
    return if (v.len == 0) "/usr/local/lj" else v;
}

const Fail = error{Failed};

fn fail(comptime fmt: []const u8, args: anytype) Fail {
    var buf: [1024]u8 = undefined;
    const msg = std.fmt.bufPrint(&buf, "ljspawn: " ++ fmt ++ "\n", args) catch "ljspawn: error\n";
    _ = linux.write(2, msg.ptr, msg.len);
    return error.Failed;
}

/// The world's directory: --world, else `lj world default`, else the only world there is.
/// A world that is missing, or no default, goes to the TypeScript CLI for its error and hint.
fn worldDir(gpa: Allocator, name: ?[]const u8) (Delegate || Allocator.Error)![]const u8 {
    const worlds = try std.fs.path.join(gpa, &.{ ljRoot(), "worlds" });
    const chosen = name orelse blk: {
        if (std.fs.cwd().readFileAlloc(gpa, try std.fs.path.join(gpa, &.{ worlds, ".default" }), 256)) |d| {
            break :blk std.mem.trim(u8, d, " \n\t");
        } else |_| {}
        var dir = std.fs.cwd().openDir(worlds, .{ .iterate = true }) catch return error.Delegate;
        defer dir.close();
        var it = dir.iterate();
        var only: ?[]const u8 = null;
        while (it.next() catch return error.Delegate) |e| {
            if (e.kind != .directory or e.name[0] == '.') continue;
            if (only != null) return error.Delegate;
            only = try gpa.dupe(u8, e.name);
        }
        break :blk only orelse return error.Delegate;
    };
    if (chosen.len == 0 or std.mem.indexOfScalar(u8, chosen, '/') != null or chosen[0] == '.') return error.Delegate;
    const path = try std.fs.path.join(gpa, &.{ worlds, chosen });
    var d = std.fs.cwd().openDir(path, .{}) catch return error.Delegate;
    d.close();
    return path;
}

/// The read-only bind mounts a world declares in .lj-world.json (a host world binds /usr).
fn worldMounts(gpa: Allocator, dir: []const u8, out: *std.ArrayList(Mount)) !void {
    const meta_path = try std.fs.path.join(gpa, &.{ dir, ".lj-world.json" });
    const text = std.fs.cwd().readFileAlloc(gpa, meta_path, 1 << 20) catch return;
    const Meta = struct { mounts: []const struct { src: []const u8, dst: []const u8, readonly: bool = true, layered: bool = false } = &.{} };
    const meta = std.json.parseFromSliceLeaky(Meta, gpa, text, .{ .ignore_unknown_fields = true }) catch return error.Delegate;
    for (meta.mounts) |m| try out.append(gpa, .{ .src = m.src, .dst = m.dst, .readonly = m.readonly, .layered = m.layered });
}

// ---------------------------------------------------------------------------------------
// cgroups, where cgroup_layout.zig puts them, named as src/jail/cgroup.ts names them.

const Cg = struct { dir: []const u8, kind: spec_mod.CgroupKind };

fn cgroupDirs(gpa: Allocator, a: *const Args, out: *std.ArrayList(Cg)) !void {
    if (a.memory_mb == 0 and a.pids == 0 and a.cpu_millis == 0) return;
    // The owner's id, as every cgroup, lease and registry entry of lightjail carries it.
    const owner = netlease.ownerId(gpa) catch |e| return if (e == error.OutOfMemory) e else error.Delegate;
    const id = try std.fmt.allocPrint(gpa, "{s}.1", .{owner});
    const info = try std.fs.cwd().readFileAlloc(gpa, "/proc/self/mountinfo", 1 << 22);
    const layout = cgroup_layout.detect(info);
    // No cgroups at all: the TypeScript CLI words that error.
    if (layout.version == 0) return error.Delegate;
    if (cgroup_layout.prepare(&layout)) |f| return fail("{s} {s}: {s}", .{ f.what, f.path.buf[0..f.path.len], @tagName(f.e) });
    if (layout.base(.unified)) |base| {
        try out.append(gpa, .{ .dir = try std.fs.path.join(gpa, &.{ base, id }), .kind = .unified });
        return;
    }
    const wanted = [_]struct { h: cgroup_layout.Hierarchy, kind: spec_mod.CgroupKind, on: bool }{
        .{ .h = .memory, .kind = .memory, .on = a.memory_mb > 0 },
        .{ .h = .pids, .kind = .pids, .on = a.pids > 0 },
        .{ .h = .cpu, .kind = .cpu, .on = a.cpu_millis > 0 },
    };
    for (wanted) |w| if (w.on) {
        // A controller that is not mounted: the TypeScript CLI words that error.
        const base = layout.base(w.h) orelse return error.Delegate;
        try out.append(gpa, .{ .dir = try std.fs.path.join(gpa, &.{ base, id }), .kind = w.kind });
    };
}

/// Whether the OOM killer ended the jail, from the evidence both tellers read (ended.zig).
fn oomKilled(gpa: Allocator, dirs: []const Cg, sigkilled: bool) bool {
    const Dir = struct {
        gpa: Allocator,
        dir: []const u8,
        fn read(d: @This(), file: []const u8) ?[]const u8 {
            const p = std.fs.path.join(d.gpa, &.{ d.dir, file }) catch return null;
            return std.fs.cwd().readFileAlloc(d.gpa, p, 4096) catch null;
        }
    };
    for (dirs) |cg| {
        if (ended.oomShown(cg.kind, sigkilled, Dir{ .gpa = gpa, .dir = cg.dir }, Dir.read)) return true;
    }
    return false;
}

// ---------------------------------------------------------------------------------------

var keeper_pid = std.atomic.Value(i32).init(0);

fn forward(sig: i32) callconv(.c) void {
    const pid = keeper_pid.load(.acquire);
    if (pid > 0) _ = linux.kill(pid, sig);
}

fn encode(gpa: Allocator, a: *const Args, root: ?[]const u8, layers: []const []const u8, mounts: []const Mount, cgroups: []const Cg, stage: []const u8, work: ?[]const u8, wire: ?*const [netwire.Wire.size]u8) ![]const u8 {
    var e = try spec_mod.Encoder.init(gpa);
    if (root) |r| try e.string(.root_dir, r);
    for (layers) |l| try e.string(.lower, l);
    if (a.upper) |u| {
        try e.string(.upper, u);
        try e.string(.work, work.?);
    }
    try e.string(.stage, stage);
    if (a.name) |n| {
        try e.string(.hostname, n);
        try e.string(.jail_name, n);
    }
    if (a.script) |s| {
        try e.string(.argv, "/bin/sh");
        try e.string(.argv, "-c");
        try e.string(.argv, s);
    } else for (a.argv) |x| try e.string(.argv, x);
    for (a.env.items) |kv| try e.string(.env, kv);
    try e.string(.cwd, a.cwd);
    try e.int(.uid, u32, a.uid);
    try e.int(.gid, u32, a.gid);
    // stdin is inherited: the payload stays in the caller's session (job control works).
    try e.int(.flags, u32, @bitCast(spec_mod.Flags{ .net_host = a.net_host, .net_private = wire != null, .root_readonly = a.read_only }));
    if (wire) |w| try e.raw(.net, w);
    if (a.caps != 0) try e.int(.caps, u64, a.caps);
    for (mounts) |m| try e.pair(.mount, @bitCast(spec_mod.MountFlags{ .readonly = m.readonly, .layered = m.layered }), m.src, m.dst);
    // lightjail's own state is never visible in a jail (hide.zig), under either spelling.
    try e.string(.hide, ljRoot());
    if (std.fs.cwd().realpathAlloc(gpa, ljRoot())) |real| {
        if (!eql(real, ljRoot())) try e.string(.hide, real);
    } else |_| {}
    // The jail's placer creates, limits and joins these while the jail builds its root.
    for (cgroups) |cg| try e.headed(.cgroup, @intFromEnum(cg.kind), cg.dir);
    if (a.memory_mb > 0 or a.pids > 0 or a.cpu_millis > 0) {
        var lim: [24]u8 = undefined;
        std.mem.writeInt(u64, lim[0..8], a.memory_mb * 1024 * 1024, .little);
        std.mem.writeInt(u64, lim[8..16], a.pids, .little);
        std.mem.writeInt(u64, lim[16..24], a.cpu_millis, .little);
        try e.raw(.limits, &lim);
    }
    var stdio: [12]u8 = undefined;
    for (0..3) |i| std.mem.writeInt(i32, stdio[i * 4 ..][0..4], @intCast(i), .little);
    try e.raw(.stdio, &stdio);
    return e.bytes();
}

fn absolute(gpa: Allocator, p: []const u8) ![]const u8 {
    return std.fs.path.resolve(gpa, &.{p});
}

fn delegate(raw: []const []const u8) noreturn {
    // <repo>/zig/zig-out/bin/ljspawn -> <repo>/.tools/bin/bun <repo>/src/cli/lj.ts spawn ...
    var self: [std.fs.max_path_bytes]u8 = undefined;
    const exe = std.fs.selfExePath(&self) catch "/";
    const repo = std.fs.path.dirname(std.fs.path.dirname(std.fs.path.dirname(std.fs.path.dirname(exe) orelse "/") orelse "/") orelse "/") orelse "/";
    var bun_buf: [std.fs.max_path_bytes]u8 = undefined;
    var cli_buf: [std.fs.max_path_bytes]u8 = undefined;
    const bun = std.posix.getenv("LJ_BUN") orelse (std.fmt.bufPrintZ(&bun_buf, "{s}/.tools/bin/bun", .{repo}) catch "bun");
    const cli = std.fmt.bufPrintZ(&cli_buf, "{s}/src/cli/ljspawn.ts", .{repo}) catch unreachable;
    var argv: [4096]?[*:0]const u8 = undefined;
    argv[0] = "bun";
    argv[1] = cli.ptr;
    const n = @min(raw.len, argv.len - 3);
    for (std.os.argv[1 .. 1 + n], 0..) |x, k| argv[2 + k] = x;
    argv[2 + n] = null;
    const envp: [*:null]const ?[*:0]const u8 = @ptrCast(std.os.environ.ptr);
    const bunz: [*:0]const u8 = @ptrCast(bun.ptr);
    _ = linux.execve(bunz, @ptrCast(&argv), envp);
    _ = fail("cannot run the TypeScript CLI ({s}) for these arguments", .{bun}) catch {};
    linux.exit_group(70);
}

/// A private address from lease to release: registered with the root, leased, its filter
/// elements in before the spawn; afterwards taken off the host. The rules (and the words of a
/// refusal) are netlease.zig's, the same the TypeScript API follows.
///
/// Its veth is named apart from its address ("<prefix>p<7 hex>", as a pooled one): at the end
/// it only loses its address, without the rename that would wait for an RCU grace period.
const Net = struct {
    gpa: Allocator,
    cfg: netlease.Config,
    reg: []const u8,
    lease: netlease.Lease,
    wire: [netwire.Wire.size]u8,
    off: bool = false,

    fn reserve(gpa: Allocator, requested: []const u8) !Net {
        var why: netlease.Why = .{};
        const src = try netlease.subnetSource(gpa, ljRoot()) orelse return error.Delegate;
        const cfg = netlease.config(gpa, ljRoot(), src.text, src.source, &why) catch |e| return refuse(e, &why);
        // The table's rules are the TypeScript side's to make (once per root): without them, it runs.
        if ((netwire.tableExists(&cfg.table) orelse false) == false) return error.Delegate;
        var spare: [netwire.ifnamsiz]u8 = undefined;
        const veth = netwire.spareName(&cfg.prefix, &spare);
        const owner = try netlease.ownerId(gpa);
        const reg = netlease.register(gpa, &cfg, owner, &why) catch |e| return refuse(e, &why);
        errdefer netlease.unregister(reg);
        const jail = try std.fmt.allocPrint(gpa, "{s}.1", .{owner});
        // Published ports of a dead owner's address are the TypeScript side's to remove: such
        // an address is skipped here.
        const got = netlease.acquire(gpa, &cfg, .{ .address = requested, .owner = owner, .jail = jail, .veth = veth }, &why) catch |e| {
            netlease.unregister(reg);
            return refuse(e, &why);
        };
        const lease = got.lease;
        errdefer netlease.drop(gpa, cfg.dir, lease.address, owner) catch {};
        const addr = netlease.ipBytes(netlease.parseIp(lease.address).?);
        if (netwire.jailElementsNow(&cfg.table, true, addr, lease.veth)) |f|
            return fail("network {s}: {s}: {s}", .{ lease.veth, f.step, @tagName(f.e) });
        var w = netwire.Wire{
            .address = addr,
            .gateway = netlease.ipBytes(cfg.subnet.gateway()),
            .network = netlease.ipBytes(cfg.subnet.network),
            .prefix = cfg.subnet.prefix,
            .v6 = linux.access("/proc/sys/net/ipv6", linux.F_OK) == 0,
            // Tests make the wiring fail at a step, to prove nothing stays (as the API's jails).
            .fail_at = std.fmt.parseInt(u8, std.posix.getenv("LJ_TEST_NET_FAIL_AT") orelse "0", 10) catch 0,
            .veth = std.mem.zeroes([netwire.ifnamsiz]u8),
        };
        @memcpy(w.veth[0..lease.veth.len], lease.veth);
        var n = Net{ .gpa = gpa, .cfg = cfg, .reg = reg, .lease = lease, .wire = undefined };
        w.encode(&n.wire);
        return n;
    }

    /// A refusal worded by netlease.zig, as the TypeScript CLI shows one, with its kind's exit code.
    fn refuse(e: netlease.Error, why: *const netlease.Why) error{OutOfMemory} {
        if (e == error.OutOfMemory) return error.OutOfMemory;
        var buf: [1200]u8 = undefined;
        const text = if (why.hint().len > 0)
            std.fmt.bufPrint(&buf, "ljspawn: {s}\n  hint: {s}\n", .{ why.message(), why.hint() }) catch "ljspawn: refused\n"
        else
            std.fmt.bufPrint(&buf, "ljspawn: {s}\n", .{why.message()}) catch "ljspawn: refused\n";
        _ = linux.write(2, text.ptr, text.len);
        linux.exit_group(why.kind.exitCode());
    }

    /// The address off the host (elements, links, the veth's address), once. Called as soon as
    /// the payload's end is known, before the keeper exits: the kernel's teardown of the jail's
    /// namespace, which follows, holds the RTNL lock across RCU grace periods.
    fn takeOff(n: *Net) void {
        if (n.off) return;
        n.off = true;
        _ = netlease.takeOff(n.gpa, &n.cfg, n.lease) catch {};
    }

    fn release(n: *Net) void {
        n.takeOff();
        netlease.drop(n.gpa, n.cfg.dir, n.lease.address, n.lease.owner) catch {};
        netlease.unregister(n.reg);
        netwire.handOffSocket();
    }
};

pub fn main() u8 {
    var arena = std.heap.ArenaAllocator.init(std.heap.page_allocator);
    const gpa = arena.allocator();
    const raw = std.process.argsAlloc(gpa) catch return 70;
    const args: []const []const u8 = raw[1..];
    return run(gpa, args) catch |e| switch (e) {
        error.Delegate => delegate(args),
        error.Failed => 71,
        else => blk: {
            _ = fail("{s}", .{@errorName(e)}) catch {};
            break :blk 70;
        },
    };
}

fn run(gpa: Allocator, raw: []const []const u8) !u8 {
    var a = try parse(gpa, raw);
    // One-shot process: a pool of namespace sets would only be thrown away.
    backend.ns_pool_enabled = false;

    var layers: std.ArrayList([]const u8) = .empty;
    var mounts: std.ArrayList(Mount) = .empty;
    var root: ?[]const u8 = null;
    if (a.root) |r| {
        root = try absolute(gpa, r);
        try worldMounts(gpa, root.?, &mounts);
    } else {
        const w = try worldDir(gpa, a.world);
        try layers.append(gpa, w);
        try worldMounts(gpa, w, &mounts);
        for (a.overlays.items) |o| try layers.append(gpa, try absolute(gpa, o));
    }
    for (a.mounts.items) |m| try mounts.append(gpa, .{ .src = try absolute(gpa, m.src), .dst = m.dst, .readonly = m.readonly });
    var work: ?[]const u8 = null;
    if (a.upper) |u| {
        a.upper = try absolute(gpa, u);
        work = try std.fmt.allocPrint(gpa, "{s}/.{s}.work", .{ std.fs.path.dirname(a.upper.?).?, std.fs.path.basename(a.upper.?) });
        try std.fs.cwd().makePath(a.upper.?);
        try std.fs.cwd().makePath(work.?);
    }
    const stage = try std.fs.path.join(gpa, &.{ ljRoot(), "run", "stage" });
    std.fs.cwd().makePath(stage) catch |e| return fail("create {s}: {s}", .{ stage, @errorName(e) });
    var cgs: std.ArrayList(Cg) = .empty;
    try cgroupDirs(gpa, &a, &cgs);

    var net: ?Net = null;
    if (a.address) |addr| net = try Net.reserve(gpa, addr);
    defer if (net) |*n| n.release();
    const bytes = try encode(gpa, &a, root, layers.items, mounts.items, cgs.items, stage, work, if (net) |*n| &n.wire else null);
    var out: abi.SpawnOut = undefined;
    var errbuf: [1024]u8 = undefined;
    const rc = backend.spawnRaw(bytes, &out, .{ .ptr = &errbuf, .len = errbuf.len });
    if (rc != 0) return fail("{s}", .{std.mem.sliceTo(&errbuf, 0)});
    keeper_pid.store(out.pid, .release);

    const tty = std.posix.isatty(0);
    var act = linux.Sigaction{ .handler = .{ .handler = forward }, .mask = linux.sigemptyset(), .flags = linux.SA.RESTART };
    const sigs = [_]u8{ linux.SIG.HUP, linux.SIG.TERM, linux.SIG.INT, linux.SIG.QUIT };
    for (sigs, 0..) |sig, k| {
        // A terminal delivers ^C and ^\ to the jail's process group itself.
        if (tty and k >= 2) {
            const ign = linux.Sigaction{ .handler = .{ .handler = linux.SIG.IGN }, .mask = linux.sigemptyset(), .flags = 0 };
            _ = linux.sigaction(sig, &ign, null);
        } else _ = linux.sigaction(sig, &act, null);
    }

    _ = linux.write(out.sync_fd, "g", 1);
    _ = linux.close(out.sync_fd);

    // Read the status pipe to its end, with the timeout as the poll deadline.
    var status_text: std.ArrayList(u8) = .empty;
    var timed_out = false;
    var scanned: usize = 0;
    const deadline: i64 = if (a.timeout_ms > 0) std.time.milliTimestamp() + @as(i64, @intCast(a.timeout_ms)) else 0;
    while (true) {
        if (deadline != 0) {
            var pfd = [_]std.posix.pollfd{.{ .fd = out.status_fd, .events = std.posix.POLL.IN, .revents = 0 }};
            const left = deadline - std.time.milliTimestamp();
            const ready = if (left <= 0) 0 else std.posix.poll(&pfd, @intCast(left)) catch 1;
            if (ready == 0 and !timed_out) {
                timed_out = true;
                _ = linux.kill(out.pid, linux.SIG.KILL);
            }
        }
        var buf: [512]u8 = undefined;
        const n = linux.read(out.status_fd, &buf, buf.len);
        const e = linux.E.init(n);
        if (e == .INTR or e == .AGAIN) continue;
        if (e != .SUCCESS or n == 0) break;
        try status_text.appendSlice(gpa, buf[0..n]);
        if (net) |*jn| if (!jn.off) while (std.mem.indexOfScalarPos(u8, status_text.items, scanned, '\n')) |end| {
            const line = status_text.items[scanned..end];
            scanned = end + 1;
            // The payload's end (or the setup's failure): its address comes off now.
            if (line.len > 2 and line[1] == ' ' and std.mem.indexOfScalar(u8, "XSE", line[0]) != null) {
                jn.takeOff();
                break;
            }
        };
    }
    var wst: u32 = 0;
    while (linux.E.init(linux.wait4(out.pid, &wst, W_ALL, null)) == .INTR) {}
    // The end, as src/jail/spawn.ts reports it.
    var exit_code: ?u32 = null;
    var signal: ?u32 = null;
    var setup_error: ?[]const u8 = null;
    var lines = std.mem.splitScalar(u8, status_text.items, '\n');
    while (lines.next()) |line| {
        if (line.len < 3) continue;
        const rest = line[2..];
        switch (line[0]) {
            'E' => if (setup_error == null and exit_code == null and signal == null) {
                setup_error = rest[(std.mem.indexOfScalar(u8, rest, ' ') orelse 0) + 1 ..];
            },
            'X' => exit_code = std.fmt.parseInt(u32, rest, 10) catch null,
            'S' => signal = std.fmt.parseInt(u32, rest, 10) catch null,
            else => {},
        }
    }
    if (setup_error == null and exit_code == null and signal == null) {
        signal = if (linux.W.IFSIGNALED(wst)) linux.W.TERMSIG(wst) else 9;
    }
    const oom = oomKilled(gpa, cgs.items, !timed_out and signal != null and signal.? == 9);
    for (cgs.items) |cg| {
        var tries: usize = 0;
        while (tries < 100) : (tries += 1) {
            std.fs.cwd().deleteDir(cg.dir) catch |err| if (err == error.DirNotEmpty or err == error.FileBusy) {
                std.Thread.sleep(2 * std.time.ns_per_ms);
                continue;
            };
            break;
        }
    }
    if (work) |w| std.fs.cwd().deleteTree(w) catch {};

    const reason: []const u8 = if (setup_error != null) "setup" else if (timed_out) "timeout" else if (oom) "oom" else if (signal != null) "signal" else "exit";
    const status: u32 = if (setup_error != null) 125 else if (signal) |s| 128 + s else exit_code.?;
    if (a.json) {
        var jb: [2048]u8 = undefined;
        var w = std.Io.Writer.fixed(&jb);
        w.print("{{\"status\":{d},\"reason\":\"{s}\",\"exitCode\":", .{ status, reason }) catch {};
        if (signal == null and setup_error == null) w.print("{d}", .{exit_code.?}) catch {} else w.writeAll("null") catch {};
        w.writeAll(",\"signal\":") catch {};
        if (signal) |s| w.print("{d}", .{s}) catch {} else w.writeAll("null") catch {};
        if (setup_error) |se| w.print(",\"error\":{f}", .{std.json.fmt(se, .{})}) catch {};
        w.writeAll("}\n") catch {};
        _ = linux.write(1, &jb, w.end);
    }
    if (setup_error) |se| {
        _ = fail("jail setup failed: {s}", .{se}) catch {};
        return 71;
    }
    if (!a.json) {
        var lb: [512]u8 = undefined;
        var w = std.Io.Writer.fixed(&lb);
        var limit: []const u8 = "";
        var limit_buf: [32]u8 = undefined;
        const why: ended.Reason = if (timed_out) .timeout else if (oom) .oom else if (signal != null) .signal else .exit;
        if (why == .oom) limit = std.fmt.bufPrint(&limit_buf, "{d} MB", .{a.memory_mb}) catch "";
        if (why == .timeout) limit = std.fmt.bufPrint(&limit_buf, "{d} s", .{@as(f64, @floatFromInt(a.timeout_ms)) / 1000}) catch "";
        if (ended.writeSpawnEndLine(&w, why, .{ .signal = signal orelse 0, .limit = limit }) catch false) {
            _ = fail("{s}", .{w.buffered()}) catch {};
        }
    }
    return @intCast(status & 0xff);
}
