//! Warming a pooled root's names. A fresh overlay mount knows no names: the first lookup of
//! each path component searches every layer and builds the overlay's own entries. A jail's
//! payload pays for that on its way to running (its executable, the ELF interpreter, the
//! loader's cache). The namespace pool's maker, which builds the root ahead of time, looks those
//! names up itself, in the jail's mount namespace after the pivot (so every symlink resolves
//! inside the root), and the jail then finds them known. Only names are looked up; nothing is
//! read but the head of the recipe's executable, to find the interpreter it names.
const std = @import("std");
const linux = std.os.linux;
const Spec = @import("spec.zig").Spec;
const sys = @import("sys.zig");

/// What the loader of almost every dynamic program looks at first.
const loader_files = [_][*:0]const u8{ "/etc/ld.so.preload", "/etc/ld.so.cache" };

/// Looks up the names the recipe's command will need first. Best effort: a name that is not
/// there is simply not warmed (its absence is cached too).
pub fn warmNames(spec: *const Spec) void {
    for (loader_files) |f| lookup(f);
    if (spec.argv.len == 0) return;
    var exe: [4096]u8 = undefined;
    const path = findExecutable(spec, &exe) orelse return;
    var head: [4096]u8 = undefined;
    const n = readHead(path, &head);
    var interp: [256]u8 = undefined;
    if (interpreterOf(head[0..n])) |i| {
        if (i.len >= interp.len) return;
        @memcpy(interp[0..i.len], i);
        interp[i.len] = 0;
        lookup(@ptrCast(&interp));
    }
}

fn lookup(path: [*:0]const u8) void {
    var st: linux.Stat = undefined;
    _ = linux.stat(path, &st);
}

/// argv[0] as execvp would find it: as given when it has a slash, else on the recipe's PATH.
fn findExecutable(spec: *const Spec, buf: *[4096]u8) ?[*:0]const u8 {
    const name = std.mem.span(spec.argv.slice()[0]);
    if (name.len == 0) return null;
    if (std.mem.indexOfScalar(u8, name, '/') != null) return spec.argv.slice()[0];
    var search: []const u8 = sys.default_path;
    for (spec.env.slice()) |kv| {
        const s = std.mem.span(kv);
        if (std.mem.startsWith(u8, s, "PATH=")) search = s[5..];
    }
    var it = std.mem.splitScalar(u8, search, ':');
    while (it.next()) |dir| {
        if (dir.len == 0) continue;
        const full = std.fmt.bufPrintZ(buf, "{s}/{s}", .{ dir, name }) catch continue;
        var st: linux.Stat = undefined;
        if (linux.E.init(linux.stat(full.ptr, &st)) == .SUCCESS and (st.mode & linux.S.IFMT) == linux.S.IFREG) return full.ptr;
    }
    return null;
}

/// The first bytes of a regular file. Anything else (a FIFO, a device) is not even opened.
fn readHead(path: [*:0]const u8, buf: []u8) usize {
    var before: linux.Stat = undefined;
    if (linux.E.init(linux.stat(path, &before)) != .SUCCESS or (before.mode & linux.S.IFMT) != linux.S.IFREG) return 0;
    const rc = linux.open(path, .{ .CLOEXEC = true, .NONBLOCK = true, .NOCTTY = true }, 0);
    if (linux.E.init(rc) != .SUCCESS) return 0;
    const fd: i32 = @intCast(rc);
    defer _ = linux.close(fd);
    var st: linux.Stat = undefined;
    if (linux.E.init(linux.fstat(fd, &st)) != .SUCCESS or (st.mode & linux.S.IFMT) != linux.S.IFREG) return 0;
    const n = linux.read(fd, buf.ptr, buf.len);
    return if (linux.E.init(n) == .SUCCESS) n else 0;
}

/// The interpreter a file names in its first bytes: a 64-bit ELF's PT_INTERP, or a script's
/// `#!` line. Null when there is none, or when it lies beyond `head`.
pub fn interpreterOf(head: []const u8) ?[]const u8 {
    if (std.mem.startsWith(u8, head, "#!")) {
        const line = head[2 .. std.mem.indexOfScalar(u8, head, '\n') orelse return null];
        var words = std.mem.tokenizeAny(u8, line, " \t");
        const w = words.next() orelse return null;
        return if (w[0] == '/') w else null;
    }
    if (head.len < 64 or !std.mem.eql(u8, head[0..4], "\x7fELF") or head[4] != 2 or head[5] != 1) return null;
    const phoff = std.mem.readInt(u64, head[32..40], .little);
    const phentsize = std.mem.readInt(u16, head[54..56], .little);
    const phnum = std.mem.readInt(u16, head[56..58], .little);
    if (phentsize < 56) return null;
    var i: u64 = 0;
    while (i < phnum) : (i += 1) {
        const at = std.math.add(u64, phoff, std.math.mul(u64, i, phentsize) catch return null) catch return null;
        if (at > head.len or head.len - at < 56) return null;
        const ph = head[@intCast(at)..][0..56];
        if (std.mem.readInt(u32, ph[0..4], .little) != 3) continue; // PT_INTERP
        const off = std.mem.readInt(u64, ph[8..16], .little);
        const size = std.mem.readInt(u64, ph[32..40], .little);
        if (size < 2 or off > head.len or head.len - off < size) return null;
        const s = head[@intCast(off)..][0..@intCast(size)];
        if (s[s.len - 1] != 0 or s[0] != '/') return null;
        return s[0 .. s.len - 1];
    }
    return null;
}

fn testElf(interp: []const u8, buf: []u8) []u8 {
    @memset(buf, 0);
    @memcpy(buf[0..6], "\x7fELF\x02\x01");
    std.mem.writeInt(u64, buf[32..40], 64, .little); // e_phoff
    std.mem.writeInt(u16, buf[54..56], 56, .little); // e_phentsize
    std.mem.writeInt(u16, buf[56..58], 2, .little); // e_phnum
    std.mem.writeInt(u32, buf[64..68], 6, .little); // PT_PHDR first
    const ph = buf[120..176];
    std.mem.writeInt(u32, ph[0..4], 3, .little);
    std.mem.writeInt(u64, ph[8..16], 200, .little);
    std.mem.writeInt(u64, ph[32..40], interp.len + 1, .little);
    @memcpy(buf[200..][0..interp.len], interp);
    return buf[0 .. 200 + interp.len + 1];
}

test "the interpreter of an ELF executable and of a script" {
    var buf: [512]u8 = undefined;
    const elf = testElf("/lib64/ld-linux-x86-64.so.2", &buf);
    try std.testing.expectEqualStrings("/lib64/ld-linux-x86-64.so.2", interpreterOf(elf).?);
    // Cut before the interpreter's end, or without its NUL: nothing.
    try std.testing.expect(interpreterOf(elf[0 .. elf.len - 2]) == null);
    std.mem.writeInt(u64, buf[120 + 32 ..][0..8], 27, .little);
    try std.testing.expect(interpreterOf(elf) == null);
    try std.testing.expectEqualStrings("/bin/sh", interpreterOf("#! /bin/sh -e\necho hi\n").?);
    try std.testing.expectEqualStrings("/usr/bin/env", interpreterOf("#!/usr/bin/env python3\n").?);
    try std.testing.expect(interpreterOf("#!relative\n") == null);
    try std.testing.expect(interpreterOf("plain text") == null);
    // A program header table pointing past the head is not followed.
    const far = testElf("/x", &buf);
    std.mem.writeInt(u64, far[32..40], 1 << 40, .little);
    try std.testing.expect(interpreterOf(far) == null);
}
