//! A Linux jail's root, from inside its child: the overlay (or a -d directory, or a pooled
//! namespace's root built ahead), /proc, /dev, /tmp, binds and layered mounts, the state-root
//! masks, and pivot_root. Mounts go onto descriptors resolved inside the root, never paths a
//! symlink in the jail's tree could redirect.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const errno = sys.errno;
const abi = @import("abi.zig");
const spec_mod = @import("spec.zig");
const errtext = @import("errtext.zig");
const idmap = @import("idmap.zig");
const Spec = spec_mod.Spec;
const hide = @import("hide.zig");
const warm = @import("warm.zig");
const O = linux.O;
const child_mod = @import("linux_child.zig");
const Child = child_mod.Child;
const Path = child_mod.Path;
const path_max = child_mod.path_max;

/// Mounts the jail's root and returns its path (in the child's private mount namespace).
pub fn assembleRoot(c: *const Child, p: *Path) [:0]const u8 {
    const s = c.spec;
    if (s.root_dir) |dir| {
        // Seed `-d DIR`: the directory itself, writable, made a mount point for pivot_root.
        c.check(linux.mount(dir.ptr, dir.ptr, null, linux.MS.BIND | linux.MS.REC, 0), "bind root {s}", .{dir});
        return dir;
    }
    const stage = s.stage.?;
    var opts: [64]u8 = undefined;
    const tmpfs_opts = if (s.upper_bytes_max > 0)
        std.fmt.bufPrintZ(&opts, "mode=0755,size={d}", .{s.upper_bytes_max}) catch unreachable
    else
        std.fmt.bufPrintZ(&opts, "mode=0755", .{}) catch unreachable;
    c.check(linux.mount("lj-stage", stage.ptr, "tmpfs", linux.MS.NOSUID | linux.MS.NODEV, @intFromPtr(tmpfs_opts.ptr)), "mount tmpfs on {s}", .{stage});
    const root = p.join(c, .{ stage, "/root" });
    c.check(linux.mkdir(root.ptr, 0o755), "mkdir {s}", .{root});

    var up = Path{};
    var wk = Path{};
    const upper: [:0]const u8, const work: [:0]const u8 = if (s.upper) |u| .{ u, s.work orelse c.die(.INVAL, "upper layer {s} given without a work directory", .{u}) } else blk: {
        const u = up.join(c, .{ stage, "/upper" });
        const w = wk.join(c, .{ stage, "/work" });
        c.check(linux.mkdir(u.ptr, 0o755), "mkdir {s}", .{u});
        c.check(linux.mkdir(w.ptr, 0o755), "mkdir {s}", .{w});
        break :blk .{ u, w };
    };

    const lowers = s.lowers.slice();
    if (lowers.len == 0) c.die(.INVAL, "no world or layers to build the root from", .{});
    const idmapped = if (c.trees) |t| attachLowers(c, stage, t) else false;

    // lowerdir lists the top layer first; the spec lists the world first.
    var data_buf: [path_max]u8 = undefined;
    var w = std.Io.Writer.fixed(data_buf[0 .. path_max - 1]);
    const too_long = "overlay options exceed one page: too many or too long layer paths";
    w.writeAll("lowerdir=") catch unreachable;
    var i = lowers.len;
    while (i > 0) {
        i -= 1;
        if (idmapped) {
            escapeOpt(&w, stage) catch c.die(.NAMETOOLONG, too_long, .{});
            w.print("/l{d}", .{i}) catch c.die(.NAMETOOLONG, too_long, .{});
        } else escapeOpt(&w, lowers[i]) catch c.die(.NAMETOOLONG, too_long, .{});
        if (i > 0) w.writeByte(':') catch c.die(.NAMETOOLONG, too_long, .{});
    }
    w.writeAll(",upperdir=") catch c.die(.NAMETOOLONG, too_long, .{});
    escapeOpt(&w, upper) catch c.die(.NAMETOOLONG, too_long, .{});
    w.writeAll(",workdir=") catch c.die(.NAMETOOLONG, too_long, .{});
    escapeOpt(&w, work) catch c.die(.NAMETOOLONG, too_long, .{});
    // Inside a user namespace overlayfs keeps its metadata in user.* xattrs.
    if (s.flags.userns) w.writeAll(",userxattr") catch c.die(.NAMETOOLONG, too_long, .{});
    data_buf[w.end] = 0;
    const mrc = linux.mount("overlay", root.ptr, "overlay", linux.MS.NOSUID | linux.MS.NODEV, @intFromPtr(&data_buf));
    if (idmapped) {
        c.check(mrc, "mount overlay on {s} (layers: {s}, upper {s}; over idmapped layers, which need Linux 5.19+)", .{ root, lowers[0], upper });
    } else c.check(mrc, "mount overlay on {s} (layers: {s}, upper {s})", .{ root, lowers[0], upper });
    return root;
}

/// Attaches the idmapped copies of the layers the owner made at `stage`/l0, l1... (in the
/// stage's tmpfs, so in this mount namespace: overlayfs takes no layer from the owner's
/// detached mounts, which belong to a mount namespace of the host's user namespace). They
/// leave with the old root at the pivot; the overlay keeps its own references. False when the
/// owner made none.
fn attachLowers(c: *const Child, stage: [:0]const u8, t: *idmap.Trees) bool {
    if (t.lowers[0] < 0) return false;
    const src = linux.open(stage.ptr, .{ .PATH = true, .DIRECTORY = true, .CLOEXEC = true }, 0);
    c.check(src, "open {s}", .{stage});
    const sfd: i32 = @intCast(src);
    defer _ = linux.close(sfd);
    for (c.spec.lowers.slice(), 0..) |l, i| {
        var name: [8]u8 = undefined;
        const n = std.fmt.bufPrintZ(&name, "l{d}", .{i}) catch unreachable;
        c.check(linux.mkdirat(sfd, n.ptr, 0o755), "mkdir {s}/{s}", .{ stage, n });
        c.check(moveTree(t.lowers[i], sfd, n.ptr), "attach the idmapped copy of layer {s}", .{l});
        _ = linux.close(t.lowers[i]);
        t.lowers[i] = -1;
    }
    return true;
}

/// The assembled root, for the mounts made in it (resolved inside it, see Target).
pub fn openRoot(c: *const Child, root: [:0]const u8) i32 {
    const rc = linux.open(root.ptr, .{ .PATH = true, .DIRECTORY = true, .CLOEXEC = true }, 0);
    c.check(rc, "open root {s}", .{root});
    return @intCast(rc);
}

/// What the root gets after the overlay and before the pivot, in the jail's child or ahead of
/// time in a pool's maker: /dev, /tmp and the bind mounts.
pub fn fillRoot(c: *const Child, rootfd: i32) void {
    mountDev(c, rootfd);
    if (!c.spec.flags.no_tmp) mountTmp(c, rootfd);
    c.mark("/dev, /tmp");
    for (c.spec.mounts.slice(), 0..) |m, i| {
        const tree = if (c.trees) |t| &t.mounts[i] else null;
        const idmapped = tree != null and tree.?.* >= 0;
        if (m.flags.layered and c.spec.root_dir == null) {
            layeredMount(c, rootfd, m, i, if (idmapped) tree.? else null);
        } else if (idmapped) bindTree(c, rootfd, m, tree.?) else bindMount(c, rootfd, m);
    }
    hideState(c, rootfd);
}

/// Masks every hidden host path (lightjail's state root) wherever the jail's tree shows it,
/// with an empty read-only tmpfs: a host world's bind of /usr must not open /usr/local/lj.
fn hideState(c: *const Child, rootfd: i32) void {
    const s = c.spec;
    for (s.hides.slice()) |h| {
        for (s.lowers.slice()) |l| maskAt(c, rootfd, l, "/", h);
        if (s.root_dir) |r| maskAt(c, rootfd, r, "/", h);
        for (s.mounts.slice()) |m| maskAt(c, rootfd, m.src, m.dst, h);
    }
}

fn maskAt(c: *const Child, rootfd: i32, src: []const u8, dst: []const u8, hidden: [:0]const u8) void {
    var buf: [path_max]u8 = undefined;
    const rel = hide.jailPath(&buf, src, dst, hidden) orelse return;
    if (rel.len == 0) c.die(.ACCES, "{s} holds lightjail's state and cannot be a jail's root", .{src});
    const rc = openIn(rootfd, rel.ptr, @as(u32, @bitCast(O{ .DIRECTORY = true })));
    if (errno(rc)) |e| {
        if (e == .NOENT) return; // not in this tree: nothing to hide
        c.die(e, "resolve /{s} in the jail root to hide it", .{rel});
    }
    var t = Target{ .fd = @intCast(rc) };
    defer t.close();
    c.check(mountOn(&t, "lj-hidden", "tmpfs", linux.MS.RDONLY | linux.MS.NOSUID | linux.MS.NODEV | linux.MS.NOEXEC, "mode=0,size=4k"), "hide /{s}", .{rel});
}

/// Makes the assembled root this mount namespace's root and detaches everything else: the
/// host's mounts are gone, not merely out of reach.
pub fn enterRoot(c: *const Child, root: [:0]const u8) void {
    c.check(linux.chdir(root.ptr), "chdir {s}", .{root});
    c.check(linux.syscall2(.pivot_root, @intFromPtr("."), @intFromPtr(".")), "pivot_root {s}", .{root});
    c.check(linux.umount2(".", linux.MNT.DETACH), "detach old root", .{});
    c.check(linux.chdir("/"), "chdir /", .{});
}

/// The namespace pool's root builder, run by a maker in its fresh mount namespace: what a
/// jail's child would do but /proc (the root, /dev, /tmp, bind mounts, the pivot), and the
/// first names the recipe's command looks up (warm.zig). A process entering the namespace
/// starts at the jail's root. Failures end the maker.
pub fn buildPooledRoot(spec: *const Spec) void {
    var trace = sys.Trace{};
    const c = Child{ .spec = spec, .status_fd = -1, .trace = &trace };
    var root_path = Path{};
    const root = assembleRoot(&c, &root_path);
    const rootfd = openRoot(&c, root);
    fillRoot(&c, rootfd);
    _ = linux.close(rootfd);
    enterRoot(&c, root);
    warm.warmNames(spec);
}

/// overlayfs splits options on ',' and layers on ':'; a backslash escapes either.
fn escapeOpt(w: *std.Io.Writer, s: []const u8) !void {
    for (s) |ch| {
        if (ch == ',' or ch == ':' or ch == '\\') try w.writeByte('\\');
        try w.writeByte(ch);
    }
}

/// A mount target resolved inside the jail's root (symlinks in the world cannot point a
/// mount outside it), held open so no path is resolved twice: mounts go onto its descriptor
/// (move_mount) or onto it as the working directory (mountOn).
const Target = struct {
    fd: i32,
    fn close(t: *Target) void {
        _ = linux.close(t.fd);
    }
};

const OpenHow = extern struct { flags: u64, mode: u64, resolve: u64 };
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_IN_ROOT = 0x10;

fn openIn(rootfd: i32, rel: [*:0]const u8, extra: u64) usize {
    const how = OpenHow{
        .flags = @as(u32, @bitCast(O{ .PATH = true, .CLOEXEC = true })) | extra,
        .mode = 0,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    return linux.syscall4(.openat2, @bitCast(@as(isize, rootfd)), @intFromPtr(rel), @intFromPtr(&how), @sizeOf(OpenHow));
}

fn target(c: *const Child, rootfd: i32, rel: [:0]const u8) Target {
    const rc = openIn(rootfd, rel.ptr, 0);
    c.check(rc, "resolve /{s} in the jail root", .{rel});
    return .{ .fd = @intCast(rc) };
}

/// Creates every missing component of `rel` inside the root; the last one as a directory, or
/// as an empty file when `file` is set (the target of a file bind mount).
fn ensurePath(c: *const Child, rootfd: i32, rel: [:0]const u8, file: bool) void {
    var prefix: [path_max]u8 = undefined;
    var start: usize = 0;
    while (start < rel.len) {
        const slash = std.mem.indexOfScalarPos(u8, rel, start, '/') orelse rel.len;
        const last = slash == rel.len;
        if (slash > start) {
            @memcpy(prefix[0..slash], rel[0..slash]);
            prefix[slash] = 0;
            const probe = openIn(rootfd, @ptrCast(&prefix), 0);
            if (errno(probe)) |e| {
                if (e != .NOENT) c.die(e, "resolve /{s} in the jail root", .{prefix[0..slash]});
                // Create the component inside its (already resolved) parent.
                var parent: i32 = rootfd;
                if (start > 0) {
                    prefix[start - 1] = 0;
                    const prc = openIn(rootfd, @ptrCast(&prefix), @as(u32, @bitCast(O{ .DIRECTORY = true })));
                    c.check(prc, "resolve /{s} in the jail root", .{prefix[0 .. start - 1]});
                    parent = @intCast(prc);
                }
                @memcpy(prefix[0..slash], rel[0..slash]);
                prefix[slash] = 0;
                const name: [*:0]const u8 = @ptrCast(&prefix[start]);
                const rc = if (last and file)
                    linux.openat(parent, name, .{ .CREAT = true, .EXCL = true, .CLOEXEC = true, .NOFOLLOW = true }, 0o644)
                else
                    linux.mkdirat(parent, name, 0o755);
                if (errno(rc)) |ce| if (ce != .EXIST) c.die(ce, "create /{s} in the jail root", .{rel[0..slash]});
                if (last and file and errno(rc) == null) _ = linux.close(@intCast(rc));
                if (parent != rootfd) _ = linux.close(parent);
            } else _ = linux.close(@intCast(probe));
        }
        start = slash + 1;
    }
}

pub fn mountProc(c: *const Child, rootfd: i32) void {
    ensurePath(c, rootfd, "proc", false);
    // Mounted on the working directory: a jail in a pooled namespace has no /proc to name the
    // target through until this one is there.
    var t = target(c, rootfd, "proc");
    c.check(mountOn(&t, "proc", "proc", linux.MS.NOSUID | linux.MS.NODEV | linux.MS.NOEXEC, ""), "mount proc on /proc", .{});
    t.close();
    // The new mount's root. What follows is done through descriptors (the new mount API): no
    // path goes through /proc/self/fd, whose lookups were most of this step's cost.
    const prc = openIn(rootfd, "proc", @as(u32, @bitCast(O{ .DIRECTORY = true })));
    c.check(prc, "open /proc", .{});
    const procfd: i32 = @intCast(prc);
    defer _ = linux.close(procfd);
    // Root in the jail has no capabilities, but some /proc files check only the uid.
    const readonly = [_][:0]const u8{ "sys", "sysrq-trigger", "irq", "bus", "fs" };
    for (readonly) |name| {
        const at = linux.openat(procfd, name.ptr, .{ .PATH = true, .NOFOLLOW = true, .CLOEXEC = true }, 0);
        if (errno(at) != null) continue; // not in this kernel
        defer _ = linux.close(@intCast(at));
        const ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        c.check(attachCopy(@intCast(at), "", true, ro, @intCast(at)), "mount /proc/{s} read-only", .{name});
    }
    const masked = [_][:0]const u8{ "kcore", "keys", "timer_list", "sched_debug" };
    for (masked) |name| {
        const at = linux.openat(procfd, name.ptr, .{ .PATH = true, .NOFOLLOW = true, .CLOEXEC = true }, 0);
        if (errno(at) != null) continue;
        defer _ = linux.close(@intCast(at));
        c.check(attachCopy(linux.AT.FDCWD, "/dev/null", false, 0, @intCast(at)), "mask /proc/{s}", .{name});
    }
}

const MOUNT_ATTR_RDONLY = sys.MOUNT_ATTR_RDONLY;
const MOUNT_ATTR_NOSUID = sys.MOUNT_ATTR_NOSUID;
const MOUNT_ATTR_NODEV = sys.MOUNT_ATTR_NODEV;
const MOUNT_ATTR_NOEXEC = sys.MOUNT_ATTR_NOEXEC;

/// Mounts a new filesystem on the directory `t` names, entered first: the mount resolves "."
/// instead of a /proc/self/fd path (whose lookups cost more than the mount).
fn mountOn(t: *const Target, src: [*:0]const u8, fstype: [*:0]const u8, flags: u32, data: [:0]const u8) usize {
    const rc = linux.fchdir(t.fd);
    if (errno(rc) != null) return rc;
    return linux.mount(src, ".", fstype, flags, @intFromPtr(data.ptr));
}

/// Binds what `dirfd` and `path` name (`path` empty: `dirfd` itself) onto the file or directory
/// `onto` names: a detached copy (open_tree; with the mounts under it when `recursive`), given
/// `attr_set` as a whole (mount_setattr; 0: as it is) before it is attached (move_mount), so
/// no part of it is ever attached without them. Returns the first failing call's result.
fn attachCopy(dirfd: i32, path: [*:0]const u8, recursive: bool, attr_set: u64, onto: i32) usize {
    const tree = sys.detachedCopy(dirfd, path, recursive, .{ .attr_set = attr_set });
    if (errno(tree) != null) return tree;
    defer _ = linux.close(@intCast(tree));
    return moveTree(@intCast(tree), onto, "");
}

fn mountDev(c: *const Child, rootfd: i32) void {
    ensurePath(c, rootfd, "dev", false);
    var t = target(c, rootfd, "dev");
    c.check(mountOn(&t, "lj-dev", "tmpfs", linux.MS.NOSUID | linux.MS.NOEXEC, "mode=0755,size=64k"), "mount tmpfs on /dev", .{});
    t.close();
    // The fresh tmpfs holds no symlinks yet, so names relative to it are safe.
    const drc = openIn(rootfd, "dev", @as(u32, @bitCast(O{ .DIRECTORY = true })));
    c.check(drc, "open /dev", .{});
    const dfd: i32 = @intCast(drc);
    const nodes = [_]struct { name: [:0]const u8, host: [*:0]const u8, major: u32, minor: u32 }{
        .{ .name = "null", .host = "/dev/null", .major = 1, .minor = 3 },
        .{ .name = "zero", .host = "/dev/zero", .major = 1, .minor = 5 },
        .{ .name = "full", .host = "/dev/full", .major = 1, .minor = 7 },
        .{ .name = "random", .host = "/dev/random", .major = 1, .minor = 8 },
        .{ .name = "urandom", .host = "/dev/urandom", .major = 1, .minor = 9 },
        .{ .name = "tty", .host = "/dev/tty", .major = 5, .minor = 0 },
    };
    for (nodes) |n| {
        if (c.spec.flags.userns) {
            // No mknod in a user namespace: bind the host's nodes onto empty files instead.
            const frc = linux.openat(dfd, n.name.ptr, .{ .CREAT = true, .EXCL = true, .CLOEXEC = true, .NOFOLLOW = true }, 0o666);
            c.check(frc, "create /dev/{s}", .{n.name});
            _ = linux.close(@intCast(frc));
            var rel: [32]u8 = undefined;
            var node = target(c, rootfd, std.fmt.bufPrintZ(&rel, "dev/{s}", .{n.name}) catch unreachable);
            c.check(attachCopy(linux.AT.FDCWD, n.host, false, 0, node.fd), "bind {s}", .{n.host});
            node.close();
            continue;
        }
        const devnum = (n.major << 8) | n.minor;
        c.check(linux.mknodat(dfd, n.name.ptr, linux.S.IFCHR | 0o666, devnum), "mknod /dev/{s}", .{n.name});
        // mknod honours the umask; the nodes must be usable by any uid.
        c.check(linux.syscall4(.fchmodat, @bitCast(@as(isize, dfd)), @intFromPtr(n.name.ptr), 0o666, 0), "chmod /dev/{s}", .{n.name});
    }
    const links = [_][2][*:0]const u8{
        .{ "/proc/self/fd", "fd" },       .{ "/proc/self/fd/0", "stdin" }, .{ "/proc/self/fd/1", "stdout" },
        .{ "/proc/self/fd/2", "stderr" }, .{ "pts/ptmx", "ptmx" },
    };
    for (links) |l| c.check(linux.symlinkat(l[0], dfd, l[1]), "symlink /dev/{s}", .{l[1]});
    c.check(linux.mkdirat(dfd, "pts", 0o755), "mkdir /dev/pts", .{});
    c.check(linux.mkdirat(dfd, "shm", 0o1777), "mkdir /dev/shm", .{});
    c.check(linux.syscall4(.fchmodat, @bitCast(@as(isize, dfd)), @intFromPtr("shm"), 0o1777, 0), "chmod /dev/shm", .{});
    var pts = target(c, rootfd, "dev/pts");
    c.check(mountOn(&pts, "devpts", "devpts", linux.MS.NOSUID | linux.MS.NOEXEC, "newinstance,ptmxmode=0666,mode=0620"), "mount devpts on /dev/pts", .{});
    pts.close();
    var shm = target(c, rootfd, "dev/shm");
    c.check(mountOn(&shm, "lj-shm", "tmpfs", linux.MS.NOSUID | linux.MS.NODEV, "mode=1777"), "mount tmpfs on /dev/shm", .{});
    shm.close();
    _ = linux.close(dfd);
}

fn mountTmp(c: *const Child, rootfd: i32) void {
    ensurePath(c, rootfd, "tmp", false);
    var t = target(c, rootfd, "tmp");
    var opts: [64]u8 = undefined;
    const o = if (c.spec.tmp_bytes_max > 0)
        std.fmt.bufPrintZ(&opts, "mode=1777,size={d}", .{c.spec.tmp_bytes_max}) catch unreachable
    else
        std.fmt.bufPrintZ(&opts, "mode=1777", .{}) catch unreachable;
    c.check(mountOn(&t, "lj-tmp", "tmpfs", linux.MS.NOSUID | linux.MS.NODEV, o), "mount tmpfs on /tmp", .{});
    t.close();
}

fn bindMount(c: *const Child, rootfd: i32, m: spec_mod.Mount) void {
    var st: linux.Stat = undefined;
    c.check(linux.stat(m.src.ptr, &st), "bind mount source {s}", .{m.src});
    var t = mountTarget(c, rootfd, m, linux.S.ISDIR(st.mode));
    defer t.close();
    // With its submounts, read-only as a whole: nothing under a read-only bind is writable.
    const ro: u64 = if (m.flags.readonly) MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV else 0;
    c.check(attachCopy(linux.AT.FDCWD, m.src.ptr, true, ro, t.fd), "bind {s} on {s}", .{ m.src, m.dst });
}

/// A `layered` mount (spec.zig): an overlay at the target whose lowers are each layer's copy
/// of the target directory (top first; the idmapped copies at the stage for a user-namespaced
/// jail) over the mount's source, with the upper layer's copy as its upper in a build.
fn layeredMount(c: *const Child, rootfd: i32, m: spec_mod.Mount, index: usize, tree: ?*i32) void {
    const s = c.spec;
    const rel = std.mem.trim(u8, m.dst, "/");
    if (rel.len == 0) c.die(.INVAL, "layered mount target {s} is the root", .{m.dst});
    const stage = s.stage orelse c.die(.INVAL, "layered mount {s} without a stage", .{m.dst});
    var data_buf: [path_max]u8 = undefined;
    var w = std.Io.Writer.fixed(data_buf[0 .. path_max - 1]);
    const too_long = "overlay options for a layered mount exceed one page";
    w.writeAll("lowerdir=") catch unreachable;
    var lowers: usize = 0;
    var i = s.lowers.len;
    while (i > 0) {
        i -= 1;
        var p = Path{};
        var idx: [24]u8 = undefined;
        const layer = if (idmap.wantsLowers(s)) p.join(c, .{ stage, std.fmt.bufPrint(&idx, "/l{d}/", .{i}) catch unreachable, rel }) else p.join(c, .{ s.lowers.slice()[i], "/", rel });
        var st: linux.Stat = undefined;
        if (errno(linux.lstat(layer.ptr, &st)) != null or !linux.S.ISDIR(st.mode)) continue;
        escapeOpt(&w, layer) catch c.die(.NAMETOOLONG, too_long, .{});
        w.writeByte(':') catch c.die(.NAMETOOLONG, too_long, .{});
        lowers += 1;
    }
    // Nothing to merge and nothing to write: the source as it is (an overlay needs two layers
    // when it has no upper).
    if (lowers == 0 and s.upper == null) {
        if (tree) |t| return bindTree(c, rootfd, m, t);
        return bindMount(c, rootfd, m);
    }
    // The source, bottom: its idmapped copy attached at the stage, or itself.
    var src_path = Path{};
    const src: [:0]const u8 = if (tree) |t| blk: {
        var name: [24]u8 = undefined;
        const n = std.fmt.bufPrintZ(&name, "m{d}", .{index}) catch unreachable;
        const sfd = linux.open(stage.ptr, .{ .PATH = true, .DIRECTORY = true, .CLOEXEC = true }, 0);
        c.check(sfd, "open {s}", .{stage});
        defer _ = linux.close(@intCast(sfd));
        c.check(linux.mkdirat(@intCast(sfd), n.ptr, 0o755), "mkdir {s}/{s}", .{ stage, n });
        c.check(moveTree(t.*, @intCast(sfd), n.ptr), "attach the idmapped copy of {s}", .{m.src});
        _ = linux.close(t.*);
        t.* = -1;
        break :blk src_path.join(c, .{ stage, "/", n });
    } else m.src;
    escapeOpt(&w, src) catch c.die(.NAMETOOLONG, too_long, .{});
    var flags: u32 = linux.MS.NOSUID | linux.MS.NODEV;
    var up = Path{};
    var wk = Path{};
    if (s.upper) |upper| {
        var idx: [24]u8 = undefined;
        const u = up.join(c, .{ upper, "/", rel });
        const wd = wk.join(c, .{ s.work.?, std.fmt.bufPrint(&idx, "-m{d}", .{index}) catch unreachable });
        makeDirs(c, u);
        makeDirs(c, wd);
        w.writeAll(",upperdir=") catch c.die(.NAMETOOLONG, too_long, .{});
        escapeOpt(&w, u) catch c.die(.NAMETOOLONG, too_long, .{});
        w.writeAll(",workdir=") catch c.die(.NAMETOOLONG, too_long, .{});
        escapeOpt(&w, wd) catch c.die(.NAMETOOLONG, too_long, .{});
    } else flags |= linux.MS.RDONLY;
    if (s.flags.userns) w.writeAll(",userxattr") catch c.die(.NAMETOOLONG, too_long, .{});
    data_buf[w.end] = 0;
    var t = mountTarget(c, rootfd, m, true);
    defer t.close();
    c.check(mountOn(&t, "overlay", "overlay", flags, data_buf[0..w.end :0]), "mount the layered overlay on {s} (over {s})", .{ m.dst, m.src });
}

/// mkdir -p of an absolute path outside the jail's root (the stage, the upper layer's disk).
fn makeDirs(c: *const Child, path: [:0]const u8) void {
    var buf: [path_max]u8 = undefined;
    @memcpy(buf[0..path.len], path);
    var i: usize = 1;
    while (i <= path.len) : (i += 1) {
        if (i < path.len and buf[i] != '/') continue;
        const saved = buf[i];
        buf[i] = 0;
        const rc = linux.mkdir(@ptrCast(&buf), 0o755);
        if (errno(rc)) |e| if (e != .EXIST) c.die(e, "mkdir {s}", .{buf[0..i]});
        buf[i] = saved;
    }
}

/// Attaches the idmapped copy of a bind source the owner made (idmap.zig) onto its target.
fn bindTree(c: *const Child, rootfd: i32, m: spec_mod.Mount, tree: *i32) void {
    var st: linux.Stat = undefined;
    c.check(linux.fstat(tree.*, &st), "bind mount source {s}", .{m.src});
    var t = mountTarget(c, rootfd, m, linux.S.ISDIR(st.mode));
    defer t.close();
    c.check(moveTree(tree.*, t.fd, ""), "bind {s} on {s} idmapped", .{ m.src, m.dst });
    _ = linux.close(tree.*);
    tree.* = -1;
}

/// Attaches the detached mount `tree` onto `path` under `dirfd` (`path` empty: onto `dirfd`).
fn moveTree(tree: i32, dirfd: i32, path: [*:0]const u8) usize {
    const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH = 0x40;
    const to_empty: usize = if (path[0] == 0) MOVE_MOUNT_T_EMPTY_PATH else 0;
    return linux.syscall5(.move_mount, @bitCast(@as(isize, tree)), @intFromPtr(""), @bitCast(@as(isize, dirfd)), @intFromPtr(path), MOVE_MOUNT_F_EMPTY_PATH | to_empty);
}

/// A bind mount's target in the jail's root, created first if asked (a directory for a
/// directory source, else an empty file).
fn mountTarget(c: *const Child, rootfd: i32, m: spec_mod.Mount, dir: bool) Target {
    const rel = std.mem.trimLeft(u8, m.dst, "/");
    if (rel.len == 0) c.die(.INVAL, "bind mount target {s} is the root", .{m.dst});
    const relz: [:0]const u8 = m.dst[m.dst.len - rel.len .. :0];
    if (m.flags.create) ensurePath(c, rootfd, relz, !dir);
    return target(c, rootfd, relz);
}

test "overlay option escaping" {
    var buf: [64]u8 = undefined;
    var w = std.Io.Writer.fixed(&buf);
    try escapeOpt(&w, "/a,b:c\\d");
    try std.testing.expectEqualStrings("/a\\,b\\:c\\\\d", w.buffered());
}
