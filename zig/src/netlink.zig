//! Netlink requests (rtnetlink and nftables) built in caller-owned buffers and exchanged with
//! raw system calls: no allocator and no locks, so a jail's child that shares the owner's
//! memory may use them as safely as the owner. One request is sent and acknowledged at a time;
//! the first failure stops the caller with the kernel's errno and the step it was doing.
const std = @import("std");
const linux = std.os.linux;

pub const NETLINK_ROUTE: u32 = 0;
pub const NETLINK_NETFILTER: u32 = 12;

pub const F = struct {
    pub const REQUEST: u16 = 0x1;
    pub const ACK: u16 = 0x4;
    pub const REPLACE: u16 = 0x100;
    pub const EXCL: u16 = 0x200;
    pub const CREATE: u16 = 0x400;
};
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;

pub const RTM = struct {
    pub const NEWLINK: u16 = 16;
    pub const GETLINK: u16 = 18;
    pub const SETLINK: u16 = 19;
    pub const NEWADDR: u16 = 20;
    pub const DELADDR: u16 = 21;
    pub const NEWROUTE: u16 = 24;
    pub const GETROUTE: u16 = 26;
};

pub const IFLA = struct {
    pub const IFNAME: u16 = 3;
    pub const LINKINFO: u16 = 18;
    pub const AF_SPEC: u16 = 26;
    pub const NET_NS_FD: u16 = 28;
    pub const INFO_KIND: u16 = 1;
    pub const INFO_DATA: u16 = 2;
    pub const VETH_INFO_PEER: u16 = 1;
    /// Inside AF_SPEC/AF_INET: the interface's IPv4 settings (net.ipv4.conf.IFACE.*).
    pub const INET_CONF: u16 = 1;
    pub const INET6_ADDR_GEN_MODE: u16 = 8;
};
pub const IPV4_DEVCONF_FORWARDING: u16 = 1;
pub const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
pub const IFF_UP: u32 = 1;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const RTA_DST: u16 = 1;
pub const RTA_GATEWAY: u16 = 5;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_BOOT: u8 = 3;
pub const RTN_UNICAST: u8 = 1;
pub const RTN_UNREACHABLE: u8 = 7;

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
pub const NFPROTO_INET: u8 = 1;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_DATA_VALUE: u16 = 1;

pub const IfInfo = extern struct { family: u8 = 0, pad: u8 = 0, type: u16 = 0, index: i32 = 0, flags: u32 = 0, change: u32 = 0 };
pub const IfAddr = extern struct { family: u8 = linux.AF.INET, prefixlen: u8, flags: u8 = 0, scope: u8 = 0, index: u32 };
pub const RtMsg = extern struct { family: u8 = linux.AF.INET, dst_len: u8, src_len: u8 = 0, tos: u8 = 0, table: u8 = RT_TABLE_MAIN, protocol: u8 = RTPROT_BOOT, scope: u8 = 0, type: u8, flags: u32 = 0 };
pub const NfGen = extern struct { family: u8, version: u8 = 0, res_id: u16 = 0 };
const Header = extern struct { len: u32, type: u16, flags: u16, seq: u32, pid: u32 };

comptime {
    std.debug.assert(@sizeOf(IfInfo) == 16 and @sizeOf(IfAddr) == 8 and @sizeOf(RtMsg) == 12 and @sizeOf(NfGen) == 4 and @sizeOf(Header) == 16);
}

pub const Failure = struct { e: linux.E, step: []const u8 };
/// A request's error and the sequence number of the message it answered.
pub const Answer = struct { e: linux.E, seq: u32 };

/// Messages under construction, one after another in a fixed buffer (a batch for nftables).
pub const Builder = struct {
    buf: [4096]u8 align(4) = undefined,
    len: usize = 0,
    /// Where the message being built starts.
    start: usize = 0,
    /// Set when something did not fit: the request is refused before it is sent.
    overflow: bool = false,
    count: u32 = 0,
    /// Sequence numbers of the first and the last message: answers to anything else (left over
    /// from an earlier request on the same socket) are skipped.
    first_seq: u32 = 0,
    last_seq: u32 = 0,

    pub fn begin(b: *Builder, typ: u16, flags: u16, seq: u32) void {
        b.start = b.len;
        if (b.count == 0) b.first_seq = seq;
        b.last_seq = seq;
        b.count += 1;
        const h = Header{ .len = 0, .type = typ, .flags = flags, .seq = seq, .pid = 0 };
        b.put(std.mem.asBytes(&h));
    }

    /// Closes the current message (its length).
    pub fn end(b: *Builder) void {
        if (b.overflow) return;
        std.mem.writeInt(u32, b.buf[b.start..][0..4], @intCast(b.len - b.start), .little);
    }

    pub fn put(b: *Builder, data: []const u8) void {
        const padded = std.mem.alignForward(usize, data.len, 4);
        if (b.overflow or b.len + padded > b.buf.len) {
            b.overflow = true;
            return;
        }
        @memcpy(b.buf[b.len..][0..data.len], data);
        @memset(b.buf[b.len + data.len ..][0 .. padded - data.len], 0);
        b.len += padded;
    }

    pub fn attr(b: *Builder, typ: u16, data: []const u8) void {
        const h = [2]u16{ @intCast(4 + data.len), typ };
        b.put(std.mem.sliceAsBytes(&h));
        b.put(data);
    }

    pub fn attrStr(b: *Builder, typ: u16, s: []const u8) void {
        const h = [2]u16{ @intCast(4 + s.len + 1), typ };
        b.put(std.mem.sliceAsBytes(&h));
        if (b.overflow or b.len + s.len + 1 > b.buf.len) {
            b.overflow = true;
            return;
        }
        @memcpy(b.buf[b.len..][0..s.len], s);
        b.buf[b.len + s.len] = 0;
        const padded = std.mem.alignForward(usize, s.len + 1, 4);
        @memset(b.buf[b.len + s.len + 1 ..][0 .. padded - s.len - 1], 0);
        b.len += padded;
    }

    pub fn attrU32(b: *Builder, typ: u16, v: u32) void {
        b.attr(typ, std.mem.asBytes(&v));
    }

    /// Opens a nested attribute; `close` it with what this returns.
    pub fn nest(b: *Builder, typ: u16) usize {
        const at = b.len;
        const h = [2]u16{ 0, typ };
        b.put(std.mem.sliceAsBytes(&h));
        return at;
    }

    pub fn close(b: *Builder, at: usize) void {
        if (b.overflow) return;
        std.mem.writeInt(u16, b.buf[at..][0..2], @intCast(b.len - at), .little);
    }

    pub fn bytes(b: *const Builder) []const u8 {
        return b.buf[0..b.len];
    }
};

/// A netlink socket of the calling process's network namespace (fixed at creation).
pub const Socket = struct {
    fd: i32,
    seq: u32 = 1,

    pub fn open(protocol: u32) union(enum) { ok: Socket, err: linux.E } {
        const rc = linux.socket(linux.AF.NETLINK, linux.SOCK.RAW | linux.SOCK.CLOEXEC, protocol);
        if (errnoOf(rc)) |e| return .{ .err = e };
        return .{ .ok = .{ .fd = @intCast(rc) } };
    }

    pub fn close(s: *Socket) void {
        if (s.fd >= 0) _ = linux.close(s.fd);
        s.fd = -1;
    }

    pub fn next(s: *Socket) u32 {
        s.seq +%= 1;
        return s.seq;
    }

    fn send(s: *Socket, b: *const Builder) ?linux.E {
        if (b.overflow) return .MSGSIZE;
        var addr = std.mem.zeroes(linux.sockaddr.nl);
        addr.family = linux.AF.NETLINK;
        while (true) {
            const rc = linux.sendto(s.fd, b.bytes().ptr, b.len, 0, @ptrCast(&addr), @sizeOf(linux.sockaddr.nl));
            const e = linux.E.init(rc);
            if (e == .INTR) continue;
            return if (e == .SUCCESS) null else e;
        }
    }

    /// Sends the built messages (each asking for an acknowledgement, sequence numbers from
    /// `first_seq`) and waits until all `expect` are acknowledged. Returns the first error and
    /// the sequence number it answered (the caller names the step). A reply of type `reply`
    /// (a GET's answer) is copied to `answer`.
    /// An error answering `abort_seq` (a batch's start) ends the wait at once: nothing else
    /// of that request will be answered.
    pub fn exchange(s: *Socket, b: *const Builder, expect: u32, answer: ?[]u8, abort_seq: u32) ?Answer {
        if (s.send(b)) |e| return .{ .e = e, .seq = 0 };
        var got: u32 = 0;
        var buf: [8192]u8 align(4) = undefined;
        var first: ?Answer = null;
        while (got < expect) {
            const rc = linux.recvfrom(s.fd, &buf, buf.len, 0, null, null);
            const re = linux.E.init(rc);
            if (re == .INTR) continue;
            if (re != .SUCCESS) return .{ .e = re, .seq = 0 };
            var pos: usize = 0;
            while (pos + @sizeOf(Header) <= rc) {
                const h = std.mem.bytesToValue(Header, buf[pos..][0..@sizeOf(Header)]);
                if (h.len < @sizeOf(Header) or pos + h.len > rc) break;
                if (h.seq < b.first_seq or h.seq > b.last_seq) {
                    pos += std.mem.alignForward(usize, h.len, 4);
                    continue;
                }
                if (h.type == NLMSG_ERROR) {
                    got += 1;
                    const code = std.mem.readInt(i32, buf[pos + 16 ..][0..4], .little);
                    if (code != 0 and first == null) first = .{ .e = @enumFromInt(@as(u16, @intCast(-code))), .seq = h.seq };
                    if (code != 0 and abort_seq != 0 and h.seq == abort_seq) return first;
                } else if (h.type != NLMSG_DONE) {
                    // A GET's answer (no acknowledgement follows it).
                    got += 1;
                    if (answer) |a| {
                        const n = @min(a.len, h.len);
                        @memcpy(a[0..n], buf[pos..][0..n]);
                    }
                }
                pos += std.mem.alignForward(usize, h.len, 4);
            }
        }
        return first;
    }
};

fn errnoOf(rc: usize) ?linux.E {
    const e = linux.E.init(rc);
    return if (e == .SUCCESS) null else e;
}

// ---------------------------------------------------------------------------------------
// rtnetlink requests, one per call (each acknowledged), as the wiring needs them.

pub const Rt = struct {
    sock: Socket,

    fn run(r: *Rt, b: *Builder, step: []const u8) ?Failure {
        b.end();
        if (r.sock.exchange(b, 1, null, 0)) |f| return .{ .e = f.e, .step = step };
        return null;
    }

    /// A veth pair: `name` here, `peer` in the namespace `peer_ns_fd` names (-1: here too).
    pub fn addVeth(r: *Rt, name: []const u8, peer: []const u8, peer_ns_fd: i32) ?Failure {
        var b = Builder{};
        b.begin(RTM.NEWLINK, F.REQUEST | F.ACK | F.CREATE | F.EXCL, r.sock.next());
        b.put(std.mem.asBytes(&IfInfo{}));
        b.attrStr(IFLA.IFNAME, name);
        const info = b.nest(IFLA.LINKINFO);
        b.attrStr(IFLA.INFO_KIND, "veth");
        const data = b.nest(IFLA.INFO_DATA);
        const p = b.nest(IFLA.VETH_INFO_PEER);
        b.put(std.mem.asBytes(&IfInfo{}));
        b.attrStr(IFLA.IFNAME, peer);
        if (peer_ns_fd >= 0) b.attrU32(IFLA.NET_NS_FD, @bitCast(peer_ns_fd));
        b.close(p);
        b.close(data);
        b.close(info);
        return r.run(&b, "create veth");
    }

    /// The index of the interface called `name`.
    pub fn index(r: *Rt, name: []const u8, out: *i32) ?Failure {
        var b = Builder{};
        b.begin(RTM.GETLINK, F.REQUEST, r.sock.next());
        b.put(std.mem.asBytes(&IfInfo{}));
        b.attrStr(IFLA.IFNAME, name);
        b.end();
        var answer: [@sizeOf(Header) + @sizeOf(IfInfo)]u8 = undefined;
        if (r.sock.exchange(&b, 1, &answer, 0)) |f| return .{ .e = f.e, .step = "look up interface" };
        const info = std.mem.bytesToValue(IfInfo, answer[@sizeOf(Header)..]);
        out.* = info.index;
        return null;
    }

    /// Interface settings before it goes up: no IPv6 link-local address (when the kernel has
    /// IPv6), and IPv4 forwarding on or off.
    pub fn configure(r: *Rt, ifindex: i32, v6: bool, forwarding: ?bool) ?Failure {
        var b = Builder{};
        b.begin(RTM.SETLINK, F.REQUEST | F.ACK, r.sock.next());
        b.put(std.mem.asBytes(&IfInfo{ .index = ifindex }));
        const af = b.nest(IFLA.AF_SPEC);
        if (forwarding) |on| {
            const inet = b.nest(linux.AF.INET);
            const conf = b.nest(IFLA.INET_CONF);
            b.attrU32(IPV4_DEVCONF_FORWARDING, @intFromBool(on));
            b.close(conf);
            b.close(inet);
        }
        if (v6) {
            const inet6 = b.nest(linux.AF.INET6);
            b.attr(IFLA.INET6_ADDR_GEN_MODE, &.{IN6_ADDR_GEN_MODE_NONE});
            b.close(inet6);
        }
        b.close(af);
        return r.run(&b, "configure interface");
    }

    /// Brings an interface up or down.
    pub fn setUp(r: *Rt, ifindex: i32, up: bool) ?Failure {
        var b = Builder{};
        b.begin(RTM.SETLINK, F.REQUEST | F.ACK, r.sock.next());
        b.put(std.mem.asBytes(&IfInfo{ .index = ifindex, .flags = if (up) IFF_UP else 0, .change = IFF_UP }));
        return r.run(&b, if (up) "bring interface up" else "bring interface down");
    }

    pub fn rename(r: *Rt, ifindex: i32, name: []const u8) ?Failure {
        var b = Builder{};
        b.begin(RTM.SETLINK, F.REQUEST | F.ACK, r.sock.next());
        b.put(std.mem.asBytes(&IfInfo{ .index = ifindex }));
        b.attrStr(IFLA.IFNAME, name);
        return r.run(&b, "rename interface");
    }

    /// `local` on the interface with `peer` at the other end (a /32 point-to-point pair).
    pub fn addPeerAddress(r: *Rt, ifindex: i32, local: [4]u8, peer: [4]u8) ?Failure {
        var b = Builder{};
        b.begin(RTM.NEWADDR, F.REQUEST | F.ACK | F.CREATE | F.EXCL, r.sock.next());
        b.put(std.mem.asBytes(&IfAddr{ .prefixlen = 32, .index = @bitCast(ifindex) }));
        b.attr(IFA_LOCAL, &local);
        b.attr(IFA_ADDRESS, &peer);
        return r.run(&b, "add address");
    }

    /// Removes the /32 address whose peer is `peer` from the interface: its peer route goes
    /// with it, without the RCU grace period that taking the interface down waits for.
    pub fn delPeerAddress(r: *Rt, ifindex: i32, peer: [4]u8) ?Failure {
        var b = Builder{};
        b.begin(RTM.DELADDR, F.REQUEST | F.ACK, r.sock.next());
        b.put(std.mem.asBytes(&IfAddr{ .prefixlen = 32, .index = @bitCast(ifindex) }));
        b.attr(IFA_ADDRESS, &peer);
        return r.run(&b, "remove address");
    }

    pub fn addDefaultRoute(r: *Rt, via: [4]u8) ?Failure {
        var b = Builder{};
        b.begin(RTM.NEWROUTE, F.REQUEST | F.ACK | F.CREATE | F.EXCL, r.sock.next());
        b.put(std.mem.asBytes(&RtMsg{ .dst_len = 0, .type = RTN_UNICAST }));
        b.attr(RTA_GATEWAY, &via);
        return r.run(&b, "add default route");
    }

    /// Whether the route the host would take toward `dst` is an unreachable one (a lookup:
    /// the kernel answers it without the RTNL lock).
    pub fn unreachableTo(r: *Rt, dst: [4]u8) bool {
        var b = Builder{};
        b.begin(RTM.GETROUTE, F.REQUEST, r.sock.next());
        b.put(std.mem.asBytes(&RtMsg{ .dst_len = 32, .type = 0, .protocol = 0 }));
        b.attr(RTA_DST, &dst);
        b.end();
        var answer: [@sizeOf(Header)]u8 = undefined;
        if (r.sock.exchange(&b, 1, &answer, 0)) |f| return f.e == .HOSTUNREACH;
        return false;
    }

    /// `unreachable NETWORK/PREFIX`, replacing whatever route for it there is.
    pub fn replaceUnreachable(r: *Rt, network: [4]u8, prefix: u8) ?Failure {
        var b = Builder{};
        b.begin(RTM.NEWROUTE, F.REQUEST | F.ACK | F.CREATE | F.REPLACE, r.sock.next());
        b.put(std.mem.asBytes(&RtMsg{ .dst_len = prefix, .type = RTN_UNREACHABLE, .scope = 0 }));
        b.attr(RTA_DST, &network);
        return r.run(&b, "add the subnet's unreachable route");
    }
};

// ---------------------------------------------------------------------------------------
// nftables: set elements added and removed in one batch (one transaction: all or nothing).

pub const NftBatch = struct {
    b: Builder = .{},
    /// The sequence number of the batch's first message; the others follow it.
    first: u32,
    msgs: u32 = 0,

    pub fn init(seq: u32) NftBatch {
        var n = NftBatch{ .first = seq };
        n.b.begin(NFNL_MSG_BATCH_BEGIN, F.REQUEST, seq);
        n.b.put(std.mem.asBytes(&NfGen{ .family = 0, .res_id = std.mem.nativeToBig(u16, NFNL_SUBSYS_NFTABLES) }));
        n.b.end();
        return n;
    }

    /// One element `key` (the concatenated, padded key bytes) added to or removed from `set`.
    pub fn element(n: *NftBatch, add: bool, table: []const u8, set: []const u8, key: []const u8) void {
        n.msgs += 1;
        const typ = (NFNL_SUBSYS_NFTABLES << 8) | (if (add) NFT_MSG_NEWSETELEM else NFT_MSG_DELSETELEM);
        const flags = F.REQUEST | F.ACK | (if (add) F.CREATE else 0);
        n.b.begin(typ, flags, n.first + n.msgs);
        n.b.put(std.mem.asBytes(&NfGen{ .family = NFPROTO_INET }));
        n.b.attrStr(NFTA_SET_ELEM_LIST_TABLE, table);
        n.b.attrStr(NFTA_SET_ELEM_LIST_SET, set);
        const list = n.b.nest(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        const el = n.b.nest(NFTA_LIST_ELEM | NLA_F_NESTED);
        const k = n.b.nest(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        n.b.attr(NFTA_DATA_VALUE, key);
        n.b.close(k);
        n.b.close(el);
        n.b.close(list);
        n.b.end();
    }

    /// Sends the batch and waits for every element's answer; the first error, if any, with
    /// the index of the element (0-based) it answered.
    pub fn commit(n: *NftBatch, sock: *Socket) ?struct { e: linux.E, index: u32 } {
        if (n.msgs == 0) return null;
        n.b.begin(NFNL_MSG_BATCH_END, F.REQUEST, n.first + n.msgs + 1);
        n.b.put(std.mem.asBytes(&NfGen{ .family = 0, .res_id = std.mem.nativeToBig(u16, NFNL_SUBSYS_NFTABLES) }));
        n.b.end();
        const f = sock.exchange(&n.b, n.msgs, null, n.first) orelse return null;
        return .{ .e = f.e, .index = if (f.seq > n.first) f.seq - n.first - 1 else 0 };
    }
};

/// Whether the inet table `name` exists (null: the kernel said something else than yes or no).
pub fn tableExists(sock: *Socket, name: []const u8) ?bool {
    var b = Builder{};
    b.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, F.REQUEST, sock.next());
    b.put(std.mem.asBytes(&NfGen{ .family = NFPROTO_INET }));
    b.attrStr(NFTA_TABLE_NAME, name);
    b.end();
    const f = sock.exchange(&b, 1, null, 0) orelse return true;
    return if (f.e == .NOENT) false else null;
}

test "builder pads attributes and closes nests" {
    var b = Builder{};
    b.begin(RTM.NEWLINK, F.REQUEST, 7);
    b.put(std.mem.asBytes(&IfInfo{}));
    const n = b.nest(IFLA.LINKINFO);
    b.attrStr(IFLA.INFO_KIND, "veth");
    b.close(n);
    b.end();
    try std.testing.expect(!b.overflow);
    // header 16 + ifinfo 16 + nest header 4 + "veth\0" attr (4 + 5 -> 12)
    try std.testing.expectEqual(@as(usize, 48), b.len);
    try std.testing.expectEqual(@as(u32, 48), std.mem.readInt(u32, b.buf[0..4], .little));
    try std.testing.expectEqual(@as(u16, 16), std.mem.readInt(u16, b.buf[32..34], .little));
    try std.testing.expectEqual(@as(u16, 9), std.mem.readInt(u16, b.buf[36..38], .little));
}

test "an oversized request is refused, not truncated" {
    var b = Builder{};
    b.begin(RTM.NEWLINK, F.REQUEST, 1);
    var big: [5000]u8 = undefined;
    @memset(&big, 'x');
    b.attr(1, big[0..4000]);
    b.attr(1, big[0..200]);
    try std.testing.expect(b.overflow);
}
