//! The FreeBSD payload's start message, separated from its read(2) calls so it is tested on
//! any host. The owner writes either the go byte ('g': run what the jail was spawned with) or,
//! for a pooled jail, 'p', a u32 little-endian length and a payload spec (argv, env, cwd, uid,
//! gid, payload flags) that replaces the spawn-time payload, as the Linux keeper reads it.
const std = @import("std");
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");

const Spec = spec_mod.Spec;

pub const Error = error{
    /// EOF before a whole message: the owner died or gave up on the jail.
    Canceled,
    /// Neither 'g' nor 'p'.
    Unknown,
    TooLarge,
    Invalid,
};

pub const Failure = struct { len: u32 = 0, tag: u16 = 0, err: spec_mod.DecodeError = error.BadHeader };

/// Reads the start message through `r` (anything with `readFull(buf) bool`, false on EOF or
/// error). On 'g' returns `spawned`; on 'p' decodes the payload into `run` (a copy of the
/// spawn-time spec, whose payload fields it replaces; its strings point into `buf`) and
/// returns `run`.
pub fn read(r: anytype, spawned: *const Spec, run: *Spec, buf: []u8, f: *Failure) Error!*const Spec {
    var first: [1]u8 = undefined;
    if (!r.readFull(&first)) return error.Canceled;
    if (first[0] == abi.sync_go) return spawned;
    if (first[0] != abi.sync_payload) return error.Unknown;
    var lenb: [4]u8 = undefined;
    if (!r.readFull(&lenb)) return error.Canceled;
    const len = std.mem.readInt(u32, &lenb, .little);
    f.len = len;
    if (len > buf.len) return error.TooLarge;
    if (!r.readFull(buf[0..len])) return error.Canceled;
    run.* = spawned.*;
    var df: spec_mod.DecodeFailure = undefined;
    spec_mod.decodePayload(buf[0..len], run, &df) catch |e| {
        f.* = .{ .len = len, .tag = df.tag, .err = e };
        return error.Invalid;
    };
    return run;
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

const Bytes = struct {
    data: []const u8,
    pos: usize = 0,
    pub fn readFull(self: *Bytes, buf: []u8) bool {
        if (self.data.len - self.pos < buf.len) return false;
        @memcpy(buf, self.data[self.pos..][0..buf.len]);
        self.pos += buf.len;
        return true;
    }
};

fn spawnedSpec(e: *spec_mod.Encoder, s: *Spec) !void {
    try e.string(.stage, "/s");
    try e.string(.argv, "/bin/placeholder");
    try e.string(.jail_name, "lj-pool");
    try e.string(.cwd, "/");
    try e.int(.uid, u32, 0);
    var df: spec_mod.DecodeFailure = undefined;
    try spec_mod.decode(e.bytes(), s, &df);
}

test "a pooled jail's 'p' message replaces argv, env, cwd, uid, gid and the session flag" {
    var se = try spec_mod.Encoder.init(testing.allocator);
    defer se.deinit();
    var spawned = Spec{};
    try spawnedSpec(&se, &spawned);

    var pe = try spec_mod.Encoder.init(testing.allocator);
    defer pe.deinit();
    try pe.string(.argv, "/bin/echo");
    try pe.string(.argv, "hi");
    try pe.string(.env, "A=1");
    try pe.string(.cwd, "/srv");
    try pe.int(.uid, u32, 1001);
    try pe.int(.gid, u32, 1002);
    try pe.int(.flags, u32, @bitCast(spec_mod.Flags{ .new_session = true }));
    // What src/jail/spec.ts payloadMessage sends: 'p', u32 length, the records.
    var msg: std.ArrayList(u8) = .empty;
    defer msg.deinit(testing.allocator);
    try msg.append(testing.allocator, 'p');
    var lenb: [4]u8 = undefined;
    std.mem.writeInt(u32, &lenb, @intCast(pe.bytes().len), .little);
    try msg.appendSlice(testing.allocator, &lenb);
    try msg.appendSlice(testing.allocator, pe.bytes());

    var r = Bytes{ .data = msg.items };
    var run = Spec{};
    var buf: [4096]u8 = undefined;
    var f = Failure{};
    const got = try read(&r, &spawned, &run, &buf, &f);
    try testing.expectEqual(@intFromPtr(&run), @intFromPtr(got));
    try testing.expectEqual(@as(usize, 2), got.argv.len);
    try testing.expectEqualStrings("/bin/echo", std.mem.span(got.argv.slice()[0]));
    try testing.expectEqualStrings("A=1", std.mem.span(got.env.slice()[0]));
    try testing.expectEqualStrings("/srv", got.cwd);
    try testing.expectEqual(@as(u32, 1001), got.uid);
    try testing.expectEqual(@as(u32, 1002), got.gid);
    try testing.expect(got.flags.new_session);
    // How the jail was built stays the spawn's.
    try testing.expectEqualStrings("lj-pool", got.jail_name.?);
    try testing.expectEqualStrings("/bin/placeholder", std.mem.span(spawned.argv.slice()[0]));
}

test "'g' runs the spawned payload; EOF, unknown bytes and oversized or bad payloads fail" {
    var se = try spec_mod.Encoder.init(testing.allocator);
    defer se.deinit();
    var spawned = Spec{};
    try spawnedSpec(&se, &spawned);
    var run = Spec{};
    var buf: [64]u8 = undefined;
    var f = Failure{};

    var g = Bytes{ .data = "g" };
    try testing.expectEqual(@intFromPtr(&spawned), @intFromPtr(try read(&g, &spawned, &run, &buf, &f)));
    var eof = Bytes{ .data = "" };
    try testing.expectError(error.Canceled, read(&eof, &spawned, &run, &buf, &f));
    var x = Bytes{ .data = "x" };
    try testing.expectError(error.Unknown, read(&x, &spawned, &run, &buf, &f));
    var big = Bytes{ .data = "p\xff\xff\x00\x00" };
    try testing.expectError(error.TooLarge, read(&big, &spawned, &run, &buf, &f));
    try testing.expectEqual(@as(u32, 0xffff), f.len);
    var short = Bytes{ .data = "p\x10\x00\x00\x00abc" };
    try testing.expectError(error.Canceled, read(&short, &spawned, &run, &buf, &f));
    var bad = Bytes{ .data = "p\x04\x00\x00\x00abcd" };
    try testing.expectError(error.Invalid, read(&bad, &spawned, &run, &buf, &f));
}
