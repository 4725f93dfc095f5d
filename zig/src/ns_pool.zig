//! A small pool of fresh namespace sets, made ahead of time: network (loopback up), IPC and
//! UTS namespaces and, when the jails being spawned share one recipe for their root, a mount
//! namespace with that root already built (the stage tmpfs, the overlay over the jail's
//! layers, /dev, /tmp and its bind mounts) and already its root: the maker pivots into it and
//! detaches the host's mounts, the dearest step of a jail's setup (detaching waits for an RCU
//! grace period). A jail's child then enters them with `setns`, which puts it at that root,
//! and has only /proc (which belongs to its pid namespace) and its limits left to do.
//!
//! Making a network namespace is the most expensive step of a Linux jail (the kernel
//! initialises every protocol's per-namespace state), and assembling the root is the next. The
//! makers run at normal priority: at SCHED_IDLE a starved maker holds the kernel's network
//! locks while jails that found the pool empty wait for them.
//!
//! For jails with private addresses the network namespace comes with its veth, and once the
//! owner has the root's filter table, with an address leased and wired ahead (Plan).
//!
//! Each set is used by exactly one jail: never shared, never reused, so it isolates exactly
//! like namespaces the jail would have made itself. The Bun process's own namespaces are never
//! touched: every set is made by a short-lived child that shares our memory and descriptor
//! table (so the references it opens are ours), unshares, builds, opens, and exits. Makers are
//! started from the spawn path, cost it one clone each, and are collected on a later call.
//!
//! The root recipe (the key) follows the jails: when a jail's root does not match it, the pool
//! adopts that jail's recipe. Each maker builds from its own copy of the recipe, so the key
//! moves on at once; a set whose root does not match the jail that takes it still gives its
//! other namespaces, and its mount namespace is dropped. A jail takes a set with its own root
//! before any other.
//!
//! Not thread-safe by itself: callers hold the spawn lock.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const W_ALL = sys.W_ALL;
const spec_mod = @import("spec.zig");
const Spec = spec_mod.Spec;
const netwire = @import("netwire.zig");
const netlease = @import("netlease.zig");

const pool_size = 6;

/// Descriptors of one set of namespaces (-1: not made, the jail makes its own).
pub const Set = struct {
    net: i32 = -1,
    ipc: i32 = -1,
    uts: i32 = -1,
    /// The mount namespace with the root built at `<stage>/root`.
    mnt: i32 = -1,
    /// The host end of a veth made with the network namespace (its jail end is eth0), for a
    /// jail with a private address (netwire.poolVeth); empty: none.
    veth: [netwire.ifnamsiz]u8 = std.mem.zeroes([netwire.ifnamsiz]u8),
    /// Its ends' interface indexes (with `veth`).
    veth_index: netwire.Indexes = .{},
    /// The address the maker leased and wired the veth with (Plan), or 0: none.
    address: u32 = 0,

    pub fn close(s: *Set) void {
        for ([_]i32{ s.net, s.ipc, s.uts, s.mnt }) |fd| if (fd >= 0) {
            _ = linux.close(fd);
        };
        s.* = .{};
    }
};

/// Whether the last jail taken had a private address: the makers then make veths too.
var want_veth = false;
/// That jail's root's veth prefix ("ljn<4 hex>"): pooled veths are named in its family
/// ("<prefix>p<7 hex>"), so that the root's filter knows them and a jail can keep the name.
var veth_prefix: [7]u8 = "ljnpool".*;

/// How the makers give pooled veths their addresses ahead (a root's names and subnet, and the
/// owner the leases name), set by the owner's claim() once that root's filter table exists. A
/// set so made holds a lease (jail "": the pool's) and is wired as a jail's would be: both
/// ends' addresses, the jail's default route, the filter's element for its address and veth.
/// A jail that claims it only has its lease rewritten as its own (netlease.adopt) and enters
/// it; nothing on its path takes the RTNL lock, makes a file or runs a transaction. Any other
/// jail that takes the set drops its network namespace, and the pool takes the address off
/// the host and gives the lease back (discard) after that jail's clone.
pub const Plan = struct {
    /// Which plan (a changed plan's sets are no longer claimed); 0: no plan, no addresses.
    gen: u32 = 0,
    dir: [512]u8 = undefined,
    dir_len: usize = 0,
    owner: [64]u8 = undefined,
    owner_len: usize = 0,
    cidr: [24]u8 = undefined,
    cidr_len: usize = 0,
    network: u32 = 0,
    prefix_len: u8 = 0,
    table: [22]u8 = undefined,
    prefix: [7]u8 = undefined,
    /// Tests only: the makers' wiring fails at this step (netwire.Addressed).
    fail_at: u8 = 0,

    /// The plan for a root's names, or null when they do not fit.
    pub fn of(c: *const netlease.Config, owner: []const u8, fail_at: u8) ?Plan {
        var p = Plan{ .fail_at = fail_at };
        if (c.dir.len > p.dir.len or owner.len > p.owner.len or c.subnet.cidr.len > p.cidr.len) return null;
        @memcpy(p.dir[0..c.dir.len], c.dir);
        p.dir_len = c.dir.len;
        @memcpy(p.owner[0..owner.len], owner);
        p.owner_len = owner.len;
        @memcpy(p.cidr[0..c.subnet.cidr.len], c.subnet.cidr);
        p.cidr_len = c.subnet.cidr.len;
        p.network = c.subnet.network;
        p.prefix_len = c.subnet.prefix;
        p.table = c.table;
        p.prefix = c.prefix;
        return p;
    }

    fn same(a: *const Plan, b: *const Plan) bool {
        return std.mem.eql(u8, a.dir[0..a.dir_len], b.dir[0..b.dir_len]) and
            std.mem.eql(u8, a.owner[0..a.owner_len], b.owner[0..b.owner_len]) and
            std.mem.eql(u8, a.cidr[0..a.cidr_len], b.cidr[0..b.cidr_len]) and
            a.network == b.network and a.prefix_len == b.prefix_len and a.fail_at == b.fail_at and
            std.mem.eql(u8, &a.table, &b.table) and std.mem.eql(u8, &a.prefix, &b.prefix);
    }

    /// The root's names as netlease uses them (what leasing and taking off read).
    fn config(p: *const Plan) netlease.Config {
        return .{
            .root = "",
            .hash = @splat('0'),
            .subnet = .{ .network = p.network, .prefix = p.prefix_len, .cidr = p.cidr[0..p.cidr_len] },
            .table = p.table,
            .prefix = p.prefix,
            .dir = p.dir[0..p.dir_len],
        };
    }

    fn ownerId(p: *const Plan) []const u8 {
        return p.owner[0..p.owner_len];
    }
};

/// The current plan (gen 0: none).
var plan: Plan = .{};
var plan_gen: u32 = 0;

/// Addressed sets taken by jails that did not claim them: their namespaces go, and their
/// addresses come off the host, after those jails' clones (refill).
const Discard = struct { net: i32, veth: [netwire.ifnamsiz]u8, address: u32, plan: Plan };
var discards: [pool_size]Discard = undefined;
var discard_count: usize = 0;

const State = enum(u8) { empty, making, ready };

const Slot = struct {
    state: State = .empty,
    pid: i32 = 0,
    /// Cleared by the kernel when the maker exits (CLONE_CHILD_CLEARTID).
    ctid: i32 align(4) = 0,
    /// Set by the maker once every namespace it made is open.
    done: bool = false,
    set: Set = .{},
    /// The key generation the root was built for (0: no root).
    root_gen: u32 = 0,
    /// Make a veth with the network namespace (want_veth when the maker started).
    veth: bool = false,
    /// The prefix to name it with (veth_prefix when the maker started).
    prefix: [7]u8 = undefined,
    /// Its veth is set aside for the jail whose address was just leased with it (claim()).
    claimed: bool = false,
    /// The plan its maker gives the veth an address by (gen 0: none).
    plan: Plan = .{},
    /// The maker's own copy of the recipe, so that the key can move on while it builds.
    recipe: Recipe = .{},
    /// The root builder's path buffers and overlay options live here.
    stack: [96 * 1024]u8 align(16) = undefined,
};

var slots: [pool_size]Slot = [_]Slot{.{}} ** pool_size;
/// Set when a maker failed to make namespaces (no permission, say): jails then make their own.
var broken = false;

/// Builds a jail's root (in the calling process's mount namespace) for the spec and makes it
/// that namespace's root, the host's mounts detached; on failure the process exits. Supplied by
/// the backend (linux.zig).
pub const RootBuilder = *const fn (spec: *const Spec) void;

/// An encoded spec and its decoding (whose strings point into `bytes`).
const Recipe = struct {
    bytes: [16 * 1024]u8 = undefined,
    len: usize = 0,
    spec: Spec = .{},

    /// Copies and decodes `src`; false when it does not fit or does not decode.
    fn set(r: *Recipe, src: []const u8) bool {
        r.spec = .{};
        if (src.len > r.bytes.len) return false;
        @memcpy(r.bytes[0..src.len], src);
        r.len = src.len;
        var failure: spec_mod.DecodeFailure = undefined;
        spec_mod.decode(r.bytes[0..src.len], &r.spec, &failure) catch {
            r.spec = .{};
            return false;
        };
        return true;
    }
};

/// The root recipe: a copy of the spec of the jail that set it, and the identity of each of
/// its layers and bind mount sources then (one replaced since must not be served from an old
/// root).
const Key = struct {
    gen: u32 = 0,
    recipe: Recipe = .{},
    layer_ids: [spec_mod.max_lowers]FileId = undefined,
    mount_ids: [spec_mod.max_mounts]FileId = undefined,
    /// A maker that failed to build this key's root: stop building it.
    failed: bool = false,
};
var key: Key = .{};

const FileId = struct { dev: u64, ino: u64 };

fn fileId(path: [*:0]const u8) ?FileId {
    var st: linux.Stat = undefined;
    if (linux.E.init(linux.stat(path, &st)) != .SUCCESS) return null;
    return .{ .dev = st.dev, .ino = st.ino };
}

/// Whether a jail's root may come from the pool at all: overlay roots over layers, on a fresh
/// tmpfs. Bind mounts are made by the maker too (a bind is a live view of its source: made
/// ahead, it shows what one made at the spawn would, as long as the source is the same
/// directory, which take() checks), except onto /proc, which only the jail can mount.
fn poolable(s: *const Spec) bool {
    if (s.root_dir != null or s.upper != null or s.flags.userns or s.lowers.len == 0 or s.stage == null) return false;
    for (s.mounts.slice()) |m| {
        const rel = std.mem.trimLeft(u8, m.dst, "/");
        if (std.mem.eql(u8, rel, "proc") or std.mem.startsWith(u8, rel, "proc/")) return false;
    }
    return true;
}

fn sameRoot(a: *const Spec, b: *const Spec) bool {
    if (a.lowers.len != b.lowers.len or a.mounts.len != b.mounts.len) return false;
    for (a.lowers.slice(), b.lowers.slice()) |x, y| if (!std.mem.eql(u8, x, y)) return false;
    for (a.mounts.slice(), b.mounts.slice()) |x, y| {
        if (!std.mem.eql(u8, x.src, y.src) or !std.mem.eql(u8, x.dst, y.dst) or
            @as(u32, @bitCast(x.flags)) != @as(u32, @bitCast(y.flags))) return false;
    }
    // The masks over the state root are part of the root (hide.zig).
    if (a.hides.len != b.hides.len) return false;
    for (a.hides.slice(), b.hides.slice()) |x, y| if (!std.mem.eql(u8, x, y)) return false;
    return std.mem.eql(u8, a.stage.?, b.stage.?) and a.upper_bytes_max == b.upper_bytes_max and
        a.tmp_bytes_max == b.tmp_bytes_max and a.flags.no_tmp == b.flags.no_tmp;
}

/// The key's layers and mount sources are still the files they were when it was set.
fn sourcesUnchanged() bool {
    for (key.recipe.spec.lowers.slice(), 0..) |l, i| if (!sameFile(l.ptr, key.layer_ids[i])) return false;
    for (key.recipe.spec.mounts.slice(), 0..) |m, i| if (!sameFile(m.src.ptr, key.mount_ids[i])) return false;
    return true;
}

fn sameFile(path: [*:0]const u8, then: FileId) bool {
    const now = fileId(path) orelse return false;
    return now.dev == then.dev and now.ino == then.ino;
}

/// Makes `spec` (encoded as `bytes`) the recipe. Makers at work build from their own copies;
/// the roots they bring are dropped, being of an older generation.
fn adopt(spec: *const Spec, bytes: []const u8) void {
    key.gen +%= 1;
    if (key.gen == 0) key.gen = 1;
    key.failed = false;
    if (!poolable(spec) or !key.recipe.set(bytes)) {
        key.recipe.spec = .{}; // no stage: no roots
        return;
    }
    for (key.recipe.spec.lowers.slice(), 0..) |l, i| {
        key.layer_ids[i] = fileId(l.ptr) orelse {
            key.recipe.spec.stage = null;
            return;
        };
    }
    for (key.recipe.spec.mounts.slice(), 0..) |m, i| {
        key.mount_ids[i] = fileId(m.src.ptr) orelse {
            key.recipe.spec.stage = null;
            return;
        };
    }
}

/// A ready slot holds a root the taking jail can use (`key_fits`: the jail's recipe is the key).
fn servesRoot(s: *const Slot, key_fits: bool) bool {
    return key_fits and s.root_gen == key.gen and s.set.mnt >= 0;
}

fn keyHasRoot() bool {
    return key.recipe.spec.stage != null and !key.failed;
}

/// Collects finished makers and hands out a ready set (the caller owns its descriptors; an
/// empty set when none is ready). `spec` is the jail's, decoded from `bytes`. The caller then
/// starts the jail and calls refill(): the jail gets a CPU before the makers do.
pub fn take(spec: *const Spec, bytes: []const u8) Set {
    if (broken) return .{};
    collect();
    const wants_root = poolable(spec);
    var same = wants_root and key.recipe.spec.stage != null and sameRoot(spec, &key.recipe.spec);
    if (same and !sourcesUnchanged()) {
        same = false;
        key.recipe.spec.stage = null; // stale: adopted anew below
    }
    // A recipe whose root a maker failed to build stays the key, unbuilt, until another comes.
    const key_fits = same and !key.failed;
    // The set whose veth this jail's address was leased with, if any; else a ready set with
    // this jail's root first, else any ready set (its root then dropped). A set claimed for
    // another jail is that jail's.
    const wanted: []const u8 = if (spec.net_wire) |w| std.mem.sliceTo(w[16..32], 0) else "";
    const private = spec.net_wire != null;
    var pick: ?*Slot = null;
    for (&slots) |*s| {
        if (s.state == .ready and s.claimed and std.mem.eql(u8, std.mem.sliceTo(&s.set.veth, 0), wanted)) pick = s;
    }
    if (pick == null) {
        var best: u8 = 0;
        for (&slots) |*s| {
            if (s.state != .ready or s.claimed) continue;
            const r = rank(s, key_fits, private);
            if (pick == null or r > best) {
                pick = s;
                best = r;
            }
        }
    }
    // A veth belongs to jails with a private address: a set with one only serves those (any
    // other drops the set's network namespace, and the veth with it), and the jail taken
    // decides whether the next sets are made with one.
    want_veth = private;
    if (private and std.mem.startsWith(u8, wanted, "ljn") and wanted.len == 15) veth_prefix = wanted[0..7].*;
    var got: Set = .{};
    if (pick) |s| {
        got = s.set;
        if (got.mnt >= 0 and !servesRoot(s, key_fits)) {
            _ = linux.close(got.mnt);
            got.mnt = -1;
        }
        const claimed_here = s.claimed and std.mem.eql(u8, std.mem.sliceTo(&s.set.veth, 0), wanted);
        if (got.address != 0 and !claimed_here) {
            // Wired for an address this jail does not have: its namespace goes after the clone.
            discards[discard_count] = .{ .net = got.net, .veth = got.veth, .address = got.address, .plan = s.plan };
            discard_count += 1;
            got.net = -1;
            got.veth[0] = 0;
            got.address = 0;
        } else if (got.veth[0] != 0 and !private) {
            _ = linux.close(got.net);
            got.net = -1;
            got.veth[0] = 0;
        }
        s.state = .empty;
        s.claimed = false;
        s.set = .{};
    }
    if (wants_root and !same) adopt(spec, bytes);
    return got;
}

/// How well an unclaimed ready set suits a jail: its own root first; then, for a jail without
/// a private address, a set without a veth, and for one with, a veth it can still address. A
/// jail without a private address thus leaves the sets wired ahead to the private jails to
/// come while another will do (taking one throws its work away).
fn rank(s: *const Slot, key_fits: bool, private: bool) u8 {
    const has_veth = s.set.veth[0] != 0 or s.set.address != 0;
    const suits = if (private) has_veth and s.set.address == 0 else !has_veth;
    return @as(u8, @intFromBool(servesRoot(s, key_fits))) * 2 + @intFromBool(suits);
}

fn collect() void {
    for (&slots) |*s| {
        if (s.state != .making or @atomicLoad(i32, &s.ctid, .acquire) != 0) continue;
        var status: u32 = 0;
        _ = linux.wait4(s.pid, &status, W_ALL | linux.W.NOHANG, null);
        if (s.done) {
            s.state = .ready;
            continue;
        }
        // The maker died on the way: namespaces it could not make mean none can be made; a
        // root it could not build means this recipe cannot be pooled (if it is still the key).
        if (s.set.uts < 0) broken = true else if (s.root_gen == key.gen) key.failed = true;
        empty(s);
    }
}

/// Ends a slot's set: an address it holds comes off the host first (discardNet).
fn empty(s: *Slot) void {
    if (s.set.address != 0) {
        discardNet(.{ .net = s.set.net, .veth = s.set.veth, .address = s.set.address, .plan = s.plan });
        s.set.net = -1;
    }
    s.set.close();
    s.state = .empty;
}

/// A pooled veth set aside by claim(): its name and, when its maker wired it (Plan), its address.
pub const Claimed = struct { name: []const u8, address: u32 };

/// Sets aside a ready set's veth of the root `prefix` for the next jail whose spec names it
/// (its address leased with this name: the jail then keeps the name, no rename on its path).
/// With `want` (a jail asking for an address) only a set wired with that address, or one
/// without any, will do; a set wired by the current plan comes first. `with` (the root's
/// plan, once its filter table exists) becomes the plan the next makers wire by. Null when
/// none is ready.
pub fn claim(prefix: []const u8, with: ?*const Plan, want: u32, out: *[netwire.ifnamsiz]u8) ?Claimed {
    if (broken) return null;
    if (with) |p| {
        if (plan.gen == 0 or !plan.same(p)) {
            plan_gen +%= 1;
            if (plan_gen == 0) plan_gen = 1;
            plan = p.*;
            plan.gen = plan_gen;
        }
    } else plan = .{}; // no addresses ahead (none claimed either) until a claim brings a plan
    collect();
    var pick: ?*Slot = null;
    for (&slots) |*s| {
        const name = std.mem.sliceTo(&s.set.veth, 0);
        if (s.state != .ready or s.claimed or name.len != 15 or !std.mem.startsWith(u8, name, prefix) or name[7] != 'p') continue;
        if (s.set.address != 0) {
            // Wired by an older plan, or for another address: not this jail's.
            if (s.plan.gen != plan.gen or plan.gen == 0 or (want != 0 and want != s.set.address)) continue;
            pick = s;
            break;
        }
        if (pick == null) pick = s;
    }
    const s = pick orelse return null;
    s.claimed = true;
    out.* = s.set.veth;
    return .{ .name = std.mem.sliceTo(out, 0), .address = s.set.address };
}

/// Gives back a claim whose jail was never spawned. A set wired with an address is not kept:
/// its address comes off the host (the lease is the caller's, adopted or not).
pub fn unclaim(name: []const u8) void {
    for (&slots) |*s| {
        if (!s.claimed or !std.mem.eql(u8, std.mem.sliceTo(&s.set.veth, 0), name)) continue;
        s.claimed = false;
        if (s.set.address != 0) empty(s);
    }
}

/// Every set wired with an address given back (their addresses off the host, their leases
/// dropped), and no more made so until the next claim brings a plan: for an owner whose root
/// fell idle, or that is about to exit. Waits for makers at work.
pub fn drain() void {
    // Makers at work finish first (collect() then takes in what they made, or gives back the
    // lease of one that failed).
    for (&slots) |*s| {
        if (s.state != .making) continue;
        while (@atomicLoad(i32, &s.ctid, .acquire) != 0) {
            var status: u32 = 0;
            const rc = linux.wait4(s.pid, &status, W_ALL, null);
            // Reaped: the kernel clears ctid as the maker goes, a moment before wait4 returns.
            if (linux.E.init(rc) != .INTR) while (@atomicLoad(i32, &s.ctid, .acquire) != 0) std.atomic.spinLoopHint();
        }
    }
    collect();
    for (&slots) |*s| {
        if (s.state == .ready and s.set.address != 0 and !s.claimed) empty(s);
    }
    flushDiscards();
    plan = .{};
}

/// Takes an addressed set's state off the host while its namespace still holds the veth (the
/// element, the host end's address and with it the route), gives the pool's lease back, then
/// lets the namespace go.
fn discardNet(d: Discard) void {
    var fallback = std.heap.stackFallback(16 * 1024, std.heap.page_allocator);
    var arena = std.heap.ArenaAllocator.init(fallback.get());
    defer arena.deinit();
    const c = d.plan.config();
    var ab: [16]u8 = undefined;
    const addr = netlease.formatIp(&ab, d.address);
    const l = netlease.Lease{ .address = addr, .owner = d.plan.ownerId(), .veth = std.mem.sliceTo(&d.veth, 0) };
    _ = netlease.takeOff(arena.allocator(), &c, l) catch {};
    netlease.dropPooled(arena.allocator(), c.dir, addr, d.plan.ownerId()) catch {};
    if (d.net >= 0) _ = linux.close(d.net);
}

fn flushDiscards() void {
    for (discards[0..discard_count]) |d| discardNet(d);
    discard_count = 0;
}

var builder: RootBuilder = undefined;

/// Starts makers for the empty slots (after a take()).
pub fn refill(build: RootBuilder) void {
    flushDiscards();
    if (broken) return;
    builder = build;
    // Bun's handlers must not run on a maker's stack: makers run with every signal blocked.
    const all = linux.sigfillset();
    var old: linux.sigset_t = undefined;
    _ = linux.sigprocmask(linux.SIG.SETMASK, &all, &old);
    defer _ = linux.sigprocmask(linux.SIG.SETMASK, &old, null);
    const with_root = keyHasRoot();
    // Makers start on this CPU. A refill follows the start of a jail, which the scheduler has
    // just placed on the idlest CPU; left to itself it puts the makers there too, and the jail
    // then shares its CPU with a millisecond of namespace making while ours, about to go idle,
    // waits for the jail's end. Our thread holds the one CPU only for the clones (a maker keeps
    // it: it does nothing else, and exits).
    var mask = sys.CpuMask{};
    var pinned = false;
    defer if (pinned) {
        _ = mask.restore();
    };
    for (&slots) |*s| {
        if (s.state != .empty) continue;
        if (!pinned) pinned = mask.pinHere();
        s.set = .{};
        s.done = false;
        s.root_gen = if (with_root and s.recipe.set(key.recipe.bytes[0..key.recipe.len])) key.gen else 0;
        s.veth = want_veth;
        s.prefix = veth_prefix;
        s.claimed = false;
        // Addresses only for veths of the plan's root.
        s.plan = if (want_veth and plan.gen != 0 and std.mem.eql(u8, &plan.prefix, &veth_prefix)) plan else .{};
        // The veth's name is chosen here (the maker clears it if it cannot make the pair).
        if (s.veth) _ = netwire.spareName(&s.prefix, &s.set.veth);
        s.ctid = 1;
        // No exit signal: Bun never hears of these children; collect() reaps them.
        const flags: u32 = linux.CLONE.VM | linux.CLONE.FILES | linux.CLONE.CHILD_CLEARTID;
        const pid = linux.clone(maker, @intFromPtr(&s.stack) + s.stack.len, flags, @intFromPtr(s), null, 0, &s.ctid);
        if (linux.E.init(pid) != .SUCCESS) return;
        s.pid = @intCast(pid);
        s.state = .making;
    }
}

/// The maker's lease for its veth (the plan's root, the owner's name, no jail yet), or 0.
fn leaseAhead(s: *Slot) u32 {
    var fallback = std.heap.stackFallback(16 * 1024, std.heap.page_allocator);
    var arena = std.heap.ArenaAllocator.init(fallback.get());
    defer arena.deinit();
    const c = s.plan.config();
    var why: netlease.Why = .{};
    const got = netlease.acquire(arena.allocator(), &c, .{
        .address = "auto",
        .owner = s.plan.ownerId(),
        .jail = "",
        .veth = std.mem.sliceTo(&s.set.veth, 0),
        .reclaim = false,
    }, &why) catch return 0;
    return netlease.parseIp(got.lease.address) orelse 0;
}

fn openNs(name: [*:0]const u8) i32 {
    const fd = linux.open(name, .{ .CLOEXEC = true }, 0);
    if (linux.E.init(fd) != .SUCCESS) linux.exit_group(1);
    return @intCast(fd);
}

/// The maker: a child sharing our memory and descriptor table. Until `done` it may exit at any
/// point; collect() then closes what it had opened.
fn maker(arg: usize) callconv(.c) u8 {
    sys.noCoreDumps();
    const s: *Slot = @ptrFromInt(arg);

    const with_root = s.root_gen != 0;
    var ns: usize = linux.CLONE.NEWNET | linux.CLONE.NEWIPC | linux.CLONE.NEWUTS;
    if (with_root) ns |= linux.CLONE.NEWNS;
    // A veth's host end is reached through the host's namespace, opened first.
    var host = netwire.Host{};
    defer host.close();
    if (s.veth and host.open() != null) {
        s.veth = false;
        s.set.veth[0] = 0;
    }
    // An address by the plan: leased here (in the host's namespace, where the lease looks for
    // a leftover veth of the address), the owner's nftables socket opened here if need be.
    var address: u32 = 0;
    if (s.veth and s.plan.gen != 0 and netwire.ownerSocket()) address = leaseAhead(s);
    // The set holds the lease from here on: whoever ends the set gives it back (discardNet).
    s.set.address = address;
    if (linux.E.init(linux.unshare(ns)) != .SUCCESS) return 1;
    if (sys.loopbackUp() != null) return 1;
    // Without its veth the set still serves (the jail makes its own).
    var net_usable = true;
    const c = s.plan.config();
    const addressed: ?netwire.Addressed = if (address != 0) .{
        .address = netlease.ipBytes(address),
        .gateway = netlease.ipBytes(c.subnet.gateway()),
        .table = &s.plan.table,
        .fail_at = s.plan.fail_at,
    } else null;
    if (s.veth) switch (netwire.poolVeth(&host, std.mem.sliceTo(&s.set.veth, 0), &s.set.veth_index, addressed)) {
        .ready => {},
        .none => s.set.veth[0] = 0,
        .spoiled => {
            s.set.veth[0] = 0;
            net_usable = false;
        },
    };
    if (net_usable) s.set.net = openNs("/proc/self/ns/net");
    s.set.ipc = openNs("/proc/self/ns/ipc");
    s.set.uts = openNs("/proc/self/ns/uts");
    if (with_root) {
        if (linux.E.init(linux.mount(null, "/", null, linux.MS.REC | linux.MS.PRIVATE, 0)) != .SUCCESS) return 1;
        // Opened first: the builder pivots into the root, and the host's /proc goes with the
        // old root.
        s.set.mnt = openNs("/proc/self/ns/mnt");
        builder(&s.recipe.spec);
    }
    @atomicStore(bool, &s.done, true, .release);
    return 0;
}
