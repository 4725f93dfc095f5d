//! A jail's private address, wired with netlink (netlink.zig); the one definition of what a
//! private jail gets on the host, used by the TypeScript API (through `lj_net`) and the native
//! ljspawn alike.
//!
//! - In the jail's child (`Host.open` before it changes namespaces, `wireJail` after): the
//!   veth pair, created from inside the jail's namespace with its host end (ljn<root tag><hex
//!   address>) placed in the host's; the host end gets the gateway address with the jail's as
//!   its peer, IPv4 forwarding on and no IPv6 link-local address, and goes up; the jail end
//!   (eth0) gets the jail's address with the gateway as peer and default route. A failure
//!   kills the jail, whose namespace takes the veth with it.
//! - In the namespace pool's maker (`poolVeth`), ahead of any jail: the same veth, configured,
//!   and with an address the maker leased, the same addresses and route and the jail's filter
//!   element; the jail that claims the set then has nothing to wire (`Wire.prewired`).
//! - In the owner (`run` over an encoded request): the filter's set elements for a jail, its
//!   links and uplink guards, added or removed in one nftables transaction; the subnet's
//!   `unreachable` route (Subnet); and the release of a jail's host veth (its address removed,
//!   or, named after the address, down and renamed out of its way: the kernel deletes it with
//!   the jail's namespace, which takes tens of milliseconds the owner need not wait for).
const std = @import("std");
const linux = std.os.linux;
const nl = @import("netlink.zig");
const sys = @import("sys.zig");

pub const Failure = nl.Failure;
pub const ifnamsiz = 16;

/// The spec's `net` record: what the child wires.
pub const Wire = struct {
    address: [4]u8,
    gateway: [4]u8,
    network: [4]u8,
    prefix: u8,
    /// The kernel has IPv6: switch link-local addresses off on both ends.
    v6: bool,
    /// Tests only: fail at this step (1-based; 0 never), to prove a failure halfway leaves
    /// nothing behind.
    fail_at: u8,
    /// The namespace pool wired the pooled veth `veth` with this address already (both ends'
    /// addresses, the jail's default route, the filter's element): the child only enters it.
    prewired: bool = false,
    /// The host end's name, NUL-padded.
    veth: [ifnamsiz]u8,

    pub const size = 4 + 4 + 4 + 4 + ifnamsiz;

    pub fn decode(p: []const u8) error{BadLength}!Wire {
        if (p.len != size) return error.BadLength;
        return .{
            .address = p[0..4].*,
            .gateway = p[4..8].*,
            .network = p[8..12].*,
            .prefix = p[12],
            .v6 = p[13] & 1 != 0,
            .fail_at = p[14],
            .prewired = p[15] & 1 != 0,
            .veth = p[16..32].*,
        };
    }

    pub fn encode(w: Wire, out: *[size]u8) void {
        out.* = std.mem.zeroes([size]u8);
        out[0..4].* = w.address;
        out[4..8].* = w.gateway;
        out[8..12].* = w.network;
        out[12] = w.prefix;
        out[13] = @intFromBool(w.v6);
        out[14] = w.fail_at;
        out[15] = @intFromBool(w.prewired);
        out[16..32].* = w.veth;
    }

    pub fn vethName(w: *const Wire) []const u8 {
        return std.mem.sliceTo(&w.veth, 0);
    }
};

/// What the child opens while it is still in the host's network namespace.
pub const Host = struct {
    ns_fd: i32 = -1,
    rt: nl.Rt = .{ .sock = .{ .fd = -1 } },

    pub fn open(h: *Host) ?Failure {
        const ns = linux.open("/proc/self/ns/net", .{ .CLOEXEC = true }, 0);
        if (errnoOf(ns)) |e| return .{ .e = e, .step = "open the host's network namespace" };
        h.ns_fd = @intCast(ns);
        switch (nl.Socket.open(nl.NETLINK_ROUTE)) {
            .ok => |s| h.rt = .{ .sock = s },
            .err => |e| return .{ .e = e, .step = "rtnetlink socket on the host" },
        }
        return null;
    }

    pub fn close(h: *Host) void {
        if (h.ns_fd >= 0) _ = linux.close(h.ns_fd);
        h.ns_fd = -1;
        h.rt.sock.close();
    }
};

/// Wires the jail (the caller is in its new network namespace). `pooled` names the host end of
/// a veth the namespace pool made with this namespace (its jail end eth0, both without IPv6
/// link-local addresses), or is empty: then the veth is made here. On failure the step is
/// named; the caller ends the jail, and its namespace takes what was made with it.
pub fn wireJail(w: *const Wire, host: *Host, pooled: []const u8, index: Indexes, trace: *sys.Trace) ?Failure {
    var jail = nl.Rt{ .sock = switch (nl.Socket.open(nl.NETLINK_ROUTE)) {
        .ok => |s| s,
        .err => |e| return .{ .e = e, .step = "rtnetlink socket in the jail" },
    } };
    defer jail.sock.close();
    return wire(w, &host.rt, &jail, if (pooled.len > 0) .{ .pooled = .{ .name = pooled, .index = index } } else .{ .from_jail = host.ns_fd }, trace);
}

/// How the veth comes to be: made from the jail's side (its peer put in the host's namespace,
/// by descriptor), from the host's (its peer put in the jail's), or made by the pool already.
const Making = union(enum) { from_jail: i32, from_host: i32, pooled: struct { name: []const u8, index: Indexes } };

fn wire(w: *const Wire, host: *nl.Rt, jail: *nl.Rt, making: Making, trace: *sys.Trace) ?Failure {
    const veth = w.vethName();
    var step: u8 = 0;
    const S = struct {
        fn at(n: *u8, fail_at: u8) ?Failure {
            n.* += 1;
            if (n.* == fail_at) return .{ .e = .CANCELED, .step = "injected failure (tests)" };
            return null;
        }
    };
    if (S.at(&step, w.fail_at)) |f| return f;
    if (w.prewired) {
        // Wired by the pool with this address: only the set claimed for it will do.
        if (making != .pooled or !std.mem.eql(u8, making.pooled.name, veth))
            return .{ .e = .NODEV, .step = "enter the pooled veth wired for this address (the pool no longer holds it)" };
        trace.mark("network: prewired by the pool");
        return null;
    }
    var hidx: i32 = 0;
    // A pooled pair is configured and up already (poolVeth); renamed, its host end is down.
    var host_down = making != .pooled;
    switch (making) {
        .pooled => |pair| {
            const name = pair.name;
            hidx = pair.index.host;
            // Leased with its pooled name, it keeps it. Otherwise (rare: the pool had none to
            // claim at the lease) it takes the lease's name, which needs it down and waits for
            // an RCU grace period.
            if (!std.mem.eql(u8, name, veth)) {
                if (host.setUp(hidx, false)) |f| return f;
                if (host.rename(hidx, veth)) |f| return f;
                host_down = true;
            }
        },
        .from_jail => |host_ns| if (jail.addVeth("eth0", veth, host_ns)) |f| return f,
        .from_host => |jail_ns| if (host.addVeth(veth, "eth0", jail_ns)) |f| return f,
    }
    if (making != .pooled) if (host.index(veth, &hidx)) |f| return f;
    const fresh = making != .pooled;
    trace.mark(if (fresh) "network: veth made" else "network: pooled veth renamed");
    if (S.at(&step, w.fail_at)) |f| return f;
    if (fresh) if (host.configure(hidx, w.v6, true)) |f| return f;
    if (host.addPeerAddress(hidx, w.gateway, w.address)) |f| return f;
    if (host_down) if (host.setUp(hidx, true)) |f| return f;
    trace.mark("network: host end");
    if (S.at(&step, w.fail_at)) |f| return f;
    var jidx: i32 = 0;
    switch (making) {
        .pooled => |pair| jidx = pair.index.jail,
        else => if (jail.index("eth0", &jidx)) |f| return f,
    }
    if (fresh) if (jail.configure(jidx, w.v6, null)) |f| return f;
    if (jail.addPeerAddress(jidx, w.address, w.gateway)) |f| return f;
    if (fresh) if (jail.setUp(jidx, true)) |f| return f;
    if (jail.addDefaultRoute(w.gateway)) |f| return f;
    if (S.at(&step, w.fail_at)) |f| return f;
    return null;
}

/// A socket in another process's network namespace, for the owner (whose threads must never
/// change namespace): a short-lived helper that shares our memory and descriptor table enters
/// the namespace, opens it, and exits.
const Helper = struct {
    var stack: [16 * 1024]u8 align(16) = undefined;
    var ns_fd: i32 = -1;
    var sock: i32 = -1;
    var err: u16 = 0;

    fn enter(_: usize) callconv(.c) u8 {
        if (linux.E.init(linux.syscall2(.setns, @bitCast(@as(isize, ns_fd)), linux.CLONE.NEWNET)) != .SUCCESS) {
            err = @intFromEnum(linux.E.PERM);
            return 1;
        }
        const rc = linux.socket(linux.AF.NETLINK, linux.SOCK.RAW | linux.SOCK.CLOEXEC, nl.NETLINK_ROUTE);
        if (linux.E.init(rc) != .SUCCESS) {
            err = @intFromEnum(linux.E.init(rc));
            return 1;
        }
        sock = @intCast(rc);
        return 0;
    }

    fn socketIn(ns: i32) ?Failure {
        ns_fd = ns;
        sock = -1;
        err = 0;
        // Bun's handlers must not run on the helper's stack.
        const all = linux.sigfillset();
        var old: linux.sigset_t = undefined;
        _ = linux.sigprocmask(linux.SIG.SETMASK, &all, &old);
        const pid = linux.clone(enter, @intFromPtr(&stack) + stack.len, linux.CLONE.VM | linux.CLONE.FILES, 0, null, 0, null);
        _ = linux.sigprocmask(linux.SIG.SETMASK, &old, null);
        if (linux.E.init(pid) != .SUCCESS) return .{ .e = linux.E.init(pid), .step = "start a helper for the jail's namespace" };
        var status: u32 = 0;
        while (linux.E.init(linux.wait4(@intCast(pid), &status, sys.W_ALL, null)) == .INTR) {}
        if (sock < 0) return .{ .e = @enumFromInt(if (err == 0) @intFromEnum(linux.E.IO) else err), .step = "rtnetlink socket in the jail" };
        return null;
    }
};

/// For a jail whose child cannot reach the host's side (a user-namespaced one: its namespaces
/// belong to its own user namespace, which has no rights over the host's): the owner wires it
/// from outside, once the jail's child has its own network namespace (`pid`: the jail's keeper).
pub fn wireFromOwner(w: *const Wire, pid: i32) ?Failure {
    var path: [40]u8 = undefined;
    const p = std.fmt.bufPrintZ(&path, "/proc/{d}/ns/net", .{pid}) catch unreachable;
    const ns = linux.open(p, .{ .CLOEXEC = true }, 0);
    if (errnoOf(ns)) |e| return .{ .e = e, .step = "open the jail's network namespace" };
    defer _ = linux.close(@intCast(ns));
    if (Helper.socketIn(@intCast(ns))) |f| return f;
    var jail = nl.Rt{ .sock = .{ .fd = Helper.sock } };
    defer jail.sock.close();
    var host = nl.Rt{ .sock = switch (nl.Socket.open(nl.NETLINK_ROUTE)) {
        .ok => |s| s,
        .err => |e| return .{ .e = e, .step = "rtnetlink socket on the host" },
    } };
    defer host.sock.close();
    var trace = sys.Trace{};
    return wire(w, &host, &jail, .{ .from_host = @intCast(ns) }, &trace);
}

/// The interface indexes of a pooled veth's ends (host end in the host's namespace, eth0 in
/// the pool's), known to the maker: a jail taking the pair looks neither up (each lookup takes
/// the RTNL lock, which the kernel may hold for other namespaces' teardown).
pub const Indexes = struct { host: i32 = 0, jail: i32 = 0 };

/// What the pool's maker made of a veth (poolVeth).
pub const Pooled = enum {
    /// No pair: the jail makes its own.
    none,
    /// The pair, both ends configured and up, without addresses.
    ready,
    /// A pair the maker could not finish: its namespace must not serve a jail (the jail
    /// would find an eth0 it cannot use); the pair goes with the namespace.
    spoiled,
};

/// For the namespace pool's maker, in the new namespace it made (`host` opened before): a veth
/// whose jail end is eth0 and whose host end is `name` (spareName: in the root's family, which
/// its filter knows; never an address's name), deleted by the kernel with the namespace if no
/// jail takes it. Everything that does not depend on the jail's address is done here, off the
/// spawn path: IPv6 link-local addresses off on both ends (the filter drops any non-IPv4
/// packet), IPv4 forwarding on the host end, and both ends up, still without an address, so
/// nothing reaches either end. A jail leased with this name keeps it and only adds addresses
/// and routes: fewer requests that take the RTNL lock while the kernel may hold it for other
/// namespaces' teardown.
pub fn poolVeth(host: *Host, name: []const u8, index: *Indexes, addressed: ?Addressed) Pooled {
    var jail = nl.Rt{ .sock = switch (nl.Socket.open(nl.NETLINK_ROUTE)) {
        .ok => |s| s,
        .err => return .none,
    } };
    defer jail.sock.close();
    if (jail.addVeth("eth0", name, host.ns_fd) != null) return .none;
    const v6 = linux.access("/proc/sys/net/ipv6", linux.F_OK) == 0;
    var jidx: i32 = 0;
    var hidx: i32 = 0;
    if (jail.index("eth0", &jidx) != null or host.rt.index(name, &hidx) != null) return .spoiled;
    if (v6) if (jail.configure(jidx, true, null) != null) return .spoiled;
    if (host.rt.configure(hidx, v6, true) != null) return .spoiled;
    if (host.rt.setUp(hidx, true) != null or jail.setUp(jidx, true) != null) return .spoiled;
    index.* = .{ .host = hidx, .jail = jidx };
    if (addressed) |a| {
        // What wire() would do on the jail's path, done here (the jail's end first: the host's
        // end, once addressed, routes the address into this namespace). A failure spoils the
        // set: the kernel deletes the pair with the namespace, and the host end's address is
        // taken off here first.
        if (a.fail_at == 1 or jail.addPeerAddress(jidx, a.address, a.gateway) != null) return .spoiled;
        if (a.fail_at == 2 or jail.addDefaultRoute(a.gateway) != null) return .spoiled;
        if (a.fail_at == 3 or host.rt.addPeerAddress(hidx, a.gateway, a.address) != null) return .spoiled;
        if (a.fail_at == 4 or putJail(a.table, a.address, name) != null) {
            _ = host.rt.delPeerAddress(hidx, a.address);
            return .spoiled;
        }
    }
    return .ready;
}

/// An address the pool's maker gives a pooled veth ahead (poolVeth): leased by the maker, its
/// filter element put through the owner's nftables socket (ownerSocket, opened beforehand).
pub const Addressed = struct {
    address: [4]u8,
    gateway: [4]u8,
    table: []const u8,
    /// Tests only: fail at this step (1-4; 0 never).
    fail_at: u8 = 0,
};

/// Opens the owner's nftables socket if it is not open: for the namespace pool's makers, which
/// share the owner's descriptors and use it from their own network namespace later (putJail).
/// A socket of their own would be closed as they exit, and the last close of an nftables
/// socket waits, holding nftables' commit lock, for the frees of earlier removals: every
/// jail's transaction behind it would wait too.
pub fn ownerSocket() bool {
    nft_lock.lock();
    defer nft_lock.unlock();
    if (nft_sock.fd < 0) switch (nl.Socket.open(nl.NETLINK_NETFILTER)) {
        .ok => |s| nft_sock = s,
        .err => return false,
    };
    return true;
}

/// The filter's element for a jail at `address` behind `veth` (no egress, no links), added on
/// the owner's socket; never a socket opened here (the caller may be in another namespace).
fn putJail(table: []const u8, address: [4]u8, veth: []const u8) ?Failure {
    var j = JailRecord{ .address = address, .egress = false, .veth = std.mem.zeroes([ifnamsiz]u8), .uplink = std.mem.zeroes([ifnamsiz]u8) };
    @memcpy(j.veth[0..@min(veth.len, ifnamsiz - 1)], veth[0..@min(veth.len, ifnamsiz - 1)]);
    var batch = newBatch();
    jailElements(&batch, true, table, j);
    nft_lock.lock();
    defer nft_lock.unlock();
    if (nft_sock.fd < 0) return .{ .e = .BADF, .step = "nftables socket (closed meanwhile)" };
    if (batch.commit(&nft_sock)) |f| {
        if (f.e != .NOENT and f.e != .EXIST) nft_sock.close();
        return .{ .e = f.e, .step = "nftables set elements" };
    }
    return null;
}

// ---------------------------------------------------------------------------------------
// The owner's requests: "LJN1", u32 version, then records `u16 tag, u16 0, u32 len, payload`
// (little-endian), as src/jail/net.ts encodes them.

pub const Tag = enum(u16) {
    /// string: the root's table (without its family: inet), e.g. "lightjail_0123456789ab"
    table = 1,
    /// JailRecord: a jail's elements, added / removed
    jail_add = 2,
    jail_del = 3,
    /// [4]u8 from, [4]u8 to: a link, added / removed
    link_add = 4,
    link_del = 5,
    /// [16]u8 ifname: an uplink guarded (forwarding switched on by lightjail)
    guard_add = 6,
    /// i32 pid, then a Wire: a jail wired by its owner (wireFromOwner), after the elements
    wire = 8,
    /// [4]u8 network, u8 prefix: the subnet's unreachable route (re)put (Subnet.guard)
    unreachable_route = 9,
    _,
};

/// The whole subnet is unreachable from the host except through a live jail's veth (its /32
/// peer route wins): a connection to an address whose jail is gone, or not wired yet, fails
/// instead of following the default route off the machine. The route is (re)put when a process
/// sets up the root's table, and after each jail's end (takeOff), never on a jail's way up:
/// every request there waits for the kernel's RTNL lock.
pub const Subnet = struct {
    network: [4]u8,
    prefix: u8,

    pub fn guard(s: Subnet, rt: *nl.Rt) ?Failure {
        return rt.replaceUnreachable(s.network, s.prefix);
    }

    /// guard() unless the route is there: a lookup toward the subnet's broadcast address (no
    /// jail ever has it) is answered "unreachable" only by that route. The lookup does not wait
    /// for the RTNL lock, as a route's change would.
    pub fn keep(s: Subnet, rt: *nl.Rt) ?Failure {
        const host_bits: u32 = if (s.prefix >= 32) 0 else (@as(u32, 0xffffffff) >> @intCast(s.prefix));
        const last = std.mem.readInt(u32, &s.network, .big) | host_bits;
        var dst: [4]u8 = undefined;
        std.mem.writeInt(u32, &dst, last, .big);
        if (rt.unreachableTo(dst)) return null;
        return s.guard(rt);
    }
};

fn hostRt() union(enum) { ok: nl.Rt, err: Failure } {
    return switch (nl.Socket.open(nl.NETLINK_ROUTE)) {
        .ok => |s| .{ .ok = .{ .sock = s } },
        .err => |e| .{ .err = .{ .e = e, .step = "rtnetlink socket" } },
    };
}

/// address, u32 flags (bit 0 egress), veth, uplink (empty: any)
const JailRecord = struct {
    address: [4]u8,
    egress: bool,
    veth: [ifnamsiz]u8,
    uplink: [ifnamsiz]u8,
    const size = 4 + 4 + 2 * ifnamsiz;
};

/// The filter's per-jail set elements (sets of the table in src/jail/net.ts's rules): which
/// address lives behind which veth, egress (any uplink or one), links.
fn jailElements(batch: *nl.NftBatch, add: bool, table: []const u8, j: JailRecord) void {
    var key: [ifnamsiz + 4]u8 = undefined;
    key[0..ifnamsiz].* = j.veth;
    key[ifnamsiz..][0..4].* = j.address;
    element(batch, add, table, "jails", &key);
    if (!j.egress) return;
    element(batch, add, table, "egress", &j.address);
    if (j.uplink[0] != 0) {
        var via: [4 + ifnamsiz]u8 = undefined;
        via[0..4].* = j.address;
        via[4..].* = j.uplink;
        element(batch, add, table, "egress_via", &via);
    } else element(batch, add, table, "egress_any", &j.address);
}

/// Removing an element that is gone would fail the whole transaction; adding it first (a
/// no-op when present) never does.
fn element(batch: *nl.NftBatch, add: bool, table: []const u8, set: []const u8, key: []const u8) void {
    batch.element(true, table, set, key);
    if (!add) batch.element(false, table, set, key);
}

/// The owner's nftables socket, kept for the process's life: closing a netlink socket that
/// removed set elements waits for nftables to free them (an RCU grace period, about 10 ms),
/// while the removal itself takes microseconds.
var nft_sock = nl.Socket{ .fd = -1 };
var nft_lock: NftLock = .{};

/// The lock on nft_sock: a futex word. The namespace pool's makers take it too, and they are
/// clones sharing our memory, not threads: std.Thread.Mutex's debug build names its holder by
/// thread-local state, which a maker shares with the thread that started it.
const NftLock = struct {
    state: std.atomic.Value(u32) = .init(0),

    fn lock(l: *NftLock) void {
        while (l.state.cmpxchgWeak(0, 1, .acquire, .monotonic) != null) std.Thread.Futex.wait(&l.state, 1);
    }

    fn unlock(l: *NftLock) void {
        l.state.store(0, .release);
        std.Thread.Futex.wake(&l.state, 1);
    }
};
var nft_seq: u32 = 0;

pub const RunFailure = struct { e: linux.E, step: []const u8, what: []const u8 = "" };

const version: u32 = 1;

/// Applies an owner's request: every set element in one transaction, then the wiring of a jail
/// its owner wires.
pub fn run(req: []const u8) ?RunFailure {
    if (req.len < 8 or !std.mem.eql(u8, req[0..4], "LJN1") or std.mem.readInt(u32, req[4..8], .little) != version)
        return .{ .e = .INVAL, .step = "decode the network request" };
    var table: []const u8 = "";
    var batch = newBatch();
    var wiring: ?struct { pid: i32, w: Wire } = null;
    var subnet: ?Subnet = null;
    var pos: usize = 8;
    while (pos < req.len) {
        if (req.len - pos < 8) return .{ .e = .INVAL, .step = "decode the network request" };
        const tag: Tag = @enumFromInt(std.mem.readInt(u16, req[pos..][0..2], .little));
        const len = std.mem.readInt(u32, req[pos + 4 ..][0..4], .little);
        pos += 8;
        if (req.len - pos < len) return .{ .e = .INVAL, .step = "decode the network request" };
        const p = req[pos..][0..len];
        pos += len;
        switch (tag) {
            .table => table = std.mem.sliceTo(p, 0),
            .jail_add, .jail_del => {
                if (p.len != JailRecord.size) return .{ .e = .INVAL, .step = "decode a jail record" };
                const j = JailRecord{ .address = p[0..4].*, .egress = p[4] & 1 != 0, .veth = p[8..24].*, .uplink = p[24..40].* };
                jailElements(&batch, tag == .jail_add, table, j);
            },
            .link_add, .link_del => {
                if (p.len != 8) return .{ .e = .INVAL, .step = "decode a link record" };
                element(&batch, tag == .link_add, table, "links", p);
            },
            .guard_add => {
                if (p.len != ifnamsiz) return .{ .e = .INVAL, .step = "decode a guard record" };
                element(&batch, true, table, "guard", p);
            },
            .wire => {
                if (p.len != 4 + Wire.size or wiring != null) return .{ .e = .INVAL, .step = "decode a wire record" };
                wiring = .{ .pid = std.mem.readInt(i32, p[0..4], .little), .w = Wire.decode(p[4..]) catch unreachable };
            },
            .unreachable_route => {
                if (p.len != 5 or p[4] > 32) return .{ .e = .INVAL, .step = "decode a subnet record" };
                subnet = .{ .network = p[0..4].*, .prefix = p[4] };
            },
            _ => return .{ .e = .INVAL, .step = "decode the network request" },
        }
    }
    if (batch.msgs > 0) {
        if (table.len == 0) return .{ .e = .INVAL, .step = "decode the network request (no table)" };
        if (batch.b.overflow) return .{ .e = .MSGSIZE, .step = "too many set elements in one request" };
        if (commit(&batch)) |f| return .{ .e = f.e, .step = f.step, .what = table };
    }
    if (subnet) |s| {
        var rt = switch (hostRt()) {
            .ok => |r| r,
            .err => |f| return .{ .e = f.e, .step = f.step },
        };
        defer rt.sock.close();
        if (s.guard(&rt)) |f| return .{ .e = f.e, .step = f.step };
    }
    if (wiring) |x| if (wireFromOwner(&x.w, x.pid)) |f| return .{ .e = f.e, .step = f.step, .what = x.w.vethName() };
    return null;
}

fn newBatch() nl.NftBatch {
    // Sequence numbers of its own for every request on the shared socket.
    return nl.NftBatch.init(1024 + @atomicRmw(u32, &nft_seq, .Add, 1024, .monotonic) % (1 << 30));
}

fn commit(batch: *nl.NftBatch) ?Failure {
    nft_lock.lock();
    defer nft_lock.unlock();
    if (nft_sock.fd < 0) switch (nl.Socket.open(nl.NETLINK_NETFILTER)) {
        .ok => |s| nft_sock = s,
        .err => |e| return .{ .e = e, .step = "nfnetlink socket" },
    };
    if (batch.commit(&nft_sock)) |f| {
        // A socket that lost track of its answers is not used again.
        if (f.e != .NOENT and f.e != .EXIST) nft_sock.close();
        return .{ .e = f.e, .step = "nftables set elements" };
    }
    return null;
}

/// For a short-lived process (the native ljspawn) about to exit: the last close of a netlink
/// socket that removed set elements waits for nftables to free them (an RCU grace period),
/// which would hold up the process's exit. A child keeps a copy of the socket until this
/// process is gone (the end of a pipe it waits on) and a moment more, so that the close finds
/// the elements freed, after everything is done, without anyone waiting for it.
pub fn handOffSocket() void {
    if (nft_sock.fd < 0) return;
    var p: [2]i32 = undefined;
    if (linux.E.init(linux.pipe2(&p, .{ .CLOEXEC = true })) != .SUCCESS) return;
    const pid = linux.fork();
    if (linux.E.init(pid) != .SUCCESS) return;
    if (pid == 0) {
        // Nothing but the two: a reader of our output must not wait for this child.
        _ = linux.dup3(p[0], 0, 0);
        _ = linux.dup3(nft_sock.fd, 1, 0);
        _ = linux.syscall3(.close_range, 2, std.math.maxInt(u32), 0);
        var b: [1]u8 = undefined;
        while (true) {
            const rc = linux.read(0, &b, 1);
            if (linux.E.init(rc) != .INTR) break;
        }
        // By now nftables' own worker has usually freed the elements (after its grace period),
        // and the close finds nothing to wait for: it would otherwise wait holding nftables'
        // lock, stalling the next process's transaction.
        const pause = linux.timespec{ .sec = 0, .nsec = 200 * std.time.ns_per_ms };
        _ = linux.nanosleep(&pause, null);
        linux.exit_group(0);
    }
    _ = linux.close(p[0]);
    // Our copy of the pipe's write end goes with this process.
}

/// For the native ljspawn: whether the root's table is there (the TypeScript side makes it).
pub fn tableExists(table: []const u8) ?bool {
    nft_lock.lock();
    defer nft_lock.unlock();
    if (nft_sock.fd < 0) switch (nl.Socket.open(nl.NETLINK_NETFILTER)) {
        .ok => |s| nft_sock = s,
        .err => return null,
    };
    return nl.tableExists(&nft_sock, table);
}

/// For the native ljspawn: a jail's elements (no egress, no links: those go through the
/// TypeScript CLI) added or removed.
pub fn jailElementsNow(table: []const u8, add: bool, address: [4]u8, veth: []const u8) ?Failure {
    var j = JailRecord{ .address = address, .egress = false, .veth = std.mem.zeroes([ifnamsiz]u8), .uplink = std.mem.zeroes([ifnamsiz]u8) };
    @memcpy(j.veth[0..veth.len], veth);
    var batch = newBatch();
    jailElements(&batch, add, table, j);
    return commit(&batch);
}

/// Takes a lease's state off the host (netlease.takeOff): its elements and links in one
/// transaction (none when the table is gone: they went with it), its host veth released
/// (`release`), and the subnet's unreachable route put back should it be gone.
pub fn takeOff(table: []const u8, subnet: Subnet, address: [4]u8, egress: bool, veth: []const u8, uplink: []const u8, links: []const [8]u8, release: bool) ?RunFailure {
    var j = JailRecord{ .address = address, .egress = egress, .veth = std.mem.zeroes([ifnamsiz]u8), .uplink = std.mem.zeroes([ifnamsiz]u8) };
    @memcpy(j.veth[0..@min(veth.len, ifnamsiz - 1)], veth[0..@min(veth.len, ifnamsiz - 1)]);
    @memcpy(j.uplink[0..@min(uplink.len, ifnamsiz - 1)], uplink[0..@min(uplink.len, ifnamsiz - 1)]);
    var batch = newBatch();
    jailElements(&batch, false, table, j);
    for (links) |*k| element(&batch, false, table, "links", k);
    if (batch.b.overflow) return .{ .e = .MSGSIZE, .step = "too many set elements in one request" };
    if (commit(&batch)) |f| if (f.e != .NOENT) return .{ .e = f.e, .step = f.step, .what = table };
    var rt = switch (hostRt()) {
        .ok => |r| r,
        .err => |f| return .{ .e = f.e, .step = f.step },
    };
    defer rt.sock.close();
    const released = if (release and veth.len > 0 and veth.len < ifnamsiz) releaseVeth(&rt, veth, address) else null;
    if (subnet.keep(&rt)) |f| return .{ .e = f.e, .step = f.step };
    if (released) |f| return .{ .e = f.e, .step = f.step, .what = veth };
    return null;
}

/// Takes a finished jail's host veth out of the way, so that its address is free at once while
/// the kernel deletes the veth with the jail's namespace. One named apart from its address (a
/// pooled or spare name, "<prefix>p<7 hex>") only loses its address, and the peer route with
/// it: nothing waits for an RCU grace period, and nothing holds the RTNL lock the next jail's
/// wiring needs. One named after its address also frees the name: down (renaming needs it)
/// and renamed to "<its root prefix>x<7 hex>". One that is gone already is fine.
pub fn releaseVeth(rt: *nl.Rt, name: []const u8, address: [4]u8) ?Failure {
    var idx: i32 = 0;
    if (rt.index(name, &idx)) |f| return if (f.e == .NODEV) null else f;
    if (isSpareName(name)) {
        if (rt.delPeerAddress(idx, address)) |f| return if (f.e == .NODEV or f.e == .ADDRNOTAVAIL) null else f;
        return null;
    }
    if (rt.setUp(idx, false)) |f| return if (f.e == .NODEV) null else f;
    var tries: usize = 0;
    while (tries < 8) : (tries += 1) {
        var grave: [ifnamsiz]u8 = undefined;
        const g = graveName(name[0..7], &grave);
        if (rt.rename(idx, g)) |f| switch (f.e) {
            .EXIST => continue,
            .NODEV => return null,
            else => return f,
        };
        return null;
    }
    return null;
}

/// A host veth named apart from any address: "<root prefix>p<7 hex>" (spareName).
pub fn isSpareName(name: []const u8) bool {
    return name.len == 15 and name[7] == 'p';
}

/// A fresh host veth name apart from any address, in the root's family: "<prefix>p<7 random
/// hex digits>" (an address's name has 8 hex digits). The namespace pool names its veths so,
/// and the native ljspawn its own: a lease records the name, and releasing such a veth needs
/// no rename.
pub fn spareName(prefix: []const u8, out: *[ifnamsiz]u8) []const u8 {
    var r: [4]u8 = undefined;
    _ = linux.getrandom(&r, r.len, 0);
    const n = std.mem.readInt(u32, &r, .little) & 0x0fffffff;
    out.* = std.mem.zeroes([ifnamsiz]u8);
    return std.fmt.bufPrint(out, "{s}p{x:0>7}", .{ prefix[0..@min(prefix.len, 7)], n }) catch unreachable;
}

/// "<prefix>x<7 random hex digits>": never an address's name (those are 8 hex digits).
pub fn graveName(prefix: []const u8, out: *[ifnamsiz]u8) []const u8 {
    var r: [4]u8 = undefined;
    _ = linux.getrandom(&r, r.len, 0);
    const n = std.mem.readInt(u32, &r, .little) & 0x0fffffff;
    return std.fmt.bufPrint(out, "{s}x{x:0>7}", .{ prefix, n }) catch unreachable;
}

fn errnoOf(rc: usize) ?linux.E {
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}

test "wire record round trip" {
    var w = Wire{ .address = .{ 10, 1, 0, 2 }, .gateway = .{ 10, 1, 0, 1 }, .network = .{ 10, 1, 0, 0 }, .prefix = 24, .v6 = true, .fail_at = 3, .veth = std.mem.zeroes([16]u8) };
    @memcpy(w.veth[0..15], "ljn12340a010002");
    var buf: [Wire.size]u8 = undefined;
    w.encode(&buf);
    const back = try Wire.decode(&buf);
    try std.testing.expectEqualStrings("ljn12340a010002", back.vethName());
    try std.testing.expectEqual(@as(u8, 24), back.prefix);
    try std.testing.expect(back.v6);
    try std.testing.expectEqual(@as(u8, 3), back.fail_at);
}

test "a grave name keeps the root's prefix and is no address's name" {
    var out: [ifnamsiz]u8 = undefined;
    const g = graveName("ljn1234", &out);
    try std.testing.expectEqual(@as(usize, 15), g.len);
    try std.testing.expectEqualStrings("ljn1234x", g[0..8]);
}

test "a request without its header is refused" {
    try std.testing.expect(run("nope") != null);
}
