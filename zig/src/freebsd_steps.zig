//! The FreeBSD backend's sequence of steps, separated from the system calls.
//!
//! `Plan.build` turns a spec into an ordered list of setup steps (RCTL rules, interface
//! aliases, mount points, mounts, devfs rules, the jail). `Supervisor(Sys)` runs them against a
//! system-call layer, starts and waits for the payload, and undoes every completed step in
//! reverse order, also after a failure half way. freebsd.zig supplies the real layer; the
//! tests below supply a recording fake, so the order is checked on any host.
const std = @import("std");
const params = @import("freebsd_params.zig");
const hide = @import("hide.zig");

const errnoCode = params.errnoCode;
pub const Failure = params.Failure;

pub const max_steps = 256;
/// SIGKILL (9 on every platform): how a destroyed jail's end is reported.
const sig_kill = 9;
const arena_size = 96 * 1024;

pub const Step = union(enum) {
    /// Refuses a name a running jail has: its RCTL rules (named after the jail) are not ours.
    name_free,
    /// rctl_add_rule(rule); undone with rctl_remove_rule(filter).
    rctl: struct { rule: [:0]const u8, filter: [:0]const u8 },
    /// An address alias on the interface; undone with its deletion. An address the host has
    /// already is used as is, neither added nor removed (SIOCAIFADDR would replace it).
    alias: params.Alias,
    /// A directory of the stage (kept: the stage belongs to the caller).
    mkdir: [:0]const u8,
    /// Checks (and creates when asked) a mount point beneath the jail root, refusing symlinks.
    /// `like` names the source of a nullfs mount: a file source gets a file mount point.
    ensure: struct { root: [:0]const u8, rel: [:0]const u8, create: bool, like: ?[:0]const u8 = null },
    /// nmount; undone with unmount of fspath.
    mount: params.MountSpec,
    /// Installs lightjail's devfs ruleset through the devfs mounted at this path.
    devfs_rules: [:0]const u8,
    /// Masks a hidden host path (lightjail's state root) at `rel` beneath the root with a
    /// read-only nullfs view of an empty directory; nothing to do when the tree has no `rel`.
    hide: struct { root: [:0]const u8, rel: [:0]const u8, mount: params.MountSpec },
    /// jail_set; undone with jail_remove (and the close of an owning descriptor).
    jail,
};

pub const BuildError = error{Invalid};

/// What the plan needs from a spec (spec.zig's Spec, copied by `Input.fromSpec`). Kept apart
/// from spec.zig so this file and its tests depend on nothing but the pure params.
pub const Mount = struct { src: [:0]const u8, dst: [:0]const u8, readonly: bool = false, create: bool = true };

pub const Input = struct {
    root_dir: ?[:0]const u8 = null,
    root_readonly: bool = false,
    stage: ?[:0]const u8 = null,
    lowers: []const [:0]const u8 = &.{},
    upper: ?[:0]const u8 = null,
    hostname: ?[:0]const u8 = null,
    jail_name: ?[:0]const u8 = null,
    limits: params.Limits = .{},
    ip4: []const [4]u8 = &.{},
    ip6: []const [16]u8 = &.{},
    iface: ?[:0]const u8 = null,
    no_tmp: bool = false,
    upper_bytes_max: u64 = 0,
    tmp_bytes_max: u64 = 0,
    mounts: []const Mount = &.{},
    /// Host paths no jail may see (spec `hide` records, see hide.zig).
    hides: []const [:0]const u8 = &.{},

    /// From spec.zig's Spec; `buf` holds the converted mounts.
    pub fn fromSpec(s: anytype, buf: []Mount) Input {
        for (s.mounts.slice(), 0..) |m, i| buf[i] = .{ .src = m.src, .dst = m.dst, .readonly = m.flags.readonly, .create = m.flags.create };
        return .{
            .root_dir = s.root_dir,
            .root_readonly = s.flags.root_readonly,
            .stage = s.stage,
            .lowers = s.lowers.slice(),
            .upper = s.upper,
            .hostname = s.hostname,
            .jail_name = s.jail_name,
            .limits = .{ .memory_bytes_max = s.memory_bytes_max, .pids_max = s.pids_max, .cpu_millis = s.cpu_millis },
            .ip4 = s.ip4.slice(),
            .ip6 = s.ip6.slice(),
            .iface = s.iface,
            .no_tmp = s.flags.no_tmp,
            .upper_bytes_max = s.upper_bytes_max,
            .tmp_bytes_max = s.tmp_bytes_max,
            .mounts = buf[0..s.mounts.len],
            .hides = s.hides.slice(),
        };
    }
};

pub const Plan = struct {
    steps: [max_steps]Step = undefined,
    n: usize = 0,
    arena: [arena_size]u8 = undefined,
    used: usize = 0,

    name: [:0]const u8 = "",
    hostname: [:0]const u8 = "",
    root: [:0]const u8 = "",
    iface: [:0]const u8 = "lo0",
    ip4: []const [4]u8 = &.{},
    ip6: []const [16]u8 = &.{},

    // Filled while running.
    /// Steps that had nothing to do (an alias the host had, a hidden path the tree lacks):
    /// their undo is skipped.
    skipped: std.StaticBitSet(max_steps) = .initEmpty(),
    jid: i32 = -1,
    desc: c_int = -1,
    params: params.JailParams = .{},
    mparams: params.MountParams = .{},
    kmsg: [256]u8 = undefined,

    pub fn steps_(p: *const Plan) []const Step {
        return p.steps[0..p.n];
    }

    fn add(p: *Plan, s: Step, f: *Failure) BuildError!void {
        if (p.n == max_steps) {
            f.set(errnoCode(.@"2BIG"), "jail setup has more than {d} steps", .{max_steps}, "");
            return error.Invalid;
        }
        p.steps[p.n] = s;
        p.n += 1;
    }

    /// Joins parts into a NUL-terminated path kept in the plan.
    fn path(p: *Plan, parts: []const []const u8, f: *Failure) BuildError![:0]const u8 {
        var len: usize = 0;
        for (parts) |part| len += part.len;
        if (len >= params.path_max) {
            f.set(errnoCode(.NAMETOOLONG), "path {s}... is longer than {d} bytes", .{ parts[0], params.path_max - 1 }, "");
            return error.Invalid;
        }
        if (p.used + len + 1 > p.arena.len) {
            f.set(errnoCode(.NAMETOOLONG), "jail setup paths exceed {d} bytes", .{arena_size}, "");
            return error.Invalid;
        }
        const start = p.used;
        for (parts) |part| {
            @memcpy(p.arena[p.used..][0..part.len], part);
            p.used += part.len;
        }
        p.arena[p.used] = 0;
        p.used += 1;
        return p.arena[start .. start + len :0];
    }

    fn rctl(p: *Plan, r: params.Rule, f: *Failure) BuildError!void {
        var b1: [512]u8 = undefined;
        var b2: [512]u8 = undefined;
        const rule = params.rctlRule(&b1, p.name, r) catch unreachable;
        const filter = params.rctlFilter(&b2, p.name, r.resource) catch unreachable;
        try p.add(.{ .rctl = .{ .rule = try p.path(&.{rule}, f), .filter = try p.path(&.{filter}, f) } }, f);
    }

    /// A mount point beneath the root, given as an absolute path inside the jail.
    fn inside(p: *Plan, dst: []const u8, f: *Failure) BuildError![:0]const u8 {
        const rel = std.mem.trim(u8, dst, "/");
        if (rel.len == 0) {
            f.set(errnoCode(.INVAL), "mount target {s} is the jail root", .{dst}, "");
            return error.Invalid;
        }
        var it = std.mem.splitScalar(u8, rel, '/');
        while (it.next()) |c| {
            if (std.mem.eql(u8, c, "..") or std.mem.eql(u8, c, ".")) {
                f.set(errnoCode(.INVAL), "mount target {s} has a '.' or '..' component", .{dst}, "");
                return error.Invalid;
            }
        }
        return p.path(&.{rel}, f);
    }

    fn mountInside(p: *Plan, rel: [:0]const u8, create: bool, like: ?[:0]const u8, m: params.MountSpec, f: *Failure) BuildError!void {
        try p.add(.{ .ensure = .{ .root = p.root, .rel = rel, .create = create, .like = like } }, f);
        var mm = m;
        mm.fspath = try p.path(&.{ p.root, "/", rel }, f);
        try p.add(.{ .mount = mm }, f);
    }

    pub fn build(p: *Plan, s: *const Input, f: *Failure) BuildError!void {
        p.n = 0;
        p.used = 0;
        p.name = s.jail_name orelse s.hostname orelse {
            f.set(errnoCode(.INVAL), "a FreeBSD jail needs a name (jail_name or hostname)", .{}, "");
            return error.Invalid;
        };
        if (params.checkJailName(p.name)) |why| {
            f.set(errnoCode(.INVAL), "jail name \"{s}\" {s}", .{ p.name, why }, "");
            return error.Invalid;
        }
        p.hostname = s.hostname orelse p.name;
        p.iface = s.iface orelse "lo0";
        p.ip4 = s.ip4;
        p.ip6 = s.ip6;

        // 0. The name is ours: RCTL rules and the jail_set below would otherwise touch another
        // jail's limits before jail_set refuses the name.
        try p.add(.name_free, f);

        // 1. Limits first: a host without RACCT fails before anything else exists.
        var rules: [3]params.Rule = undefined;
        for (params.rctlRules(s.limits, &rules)) |r|
            try p.rctl(r, f);

        // 2. Address aliases for ip4.addr/ip6.addr.
        if (p.ip4.len + p.ip6.len > 0) {
            if (params.checkIface(p.iface)) |why| {
                f.set(errnoCode(.INVAL), "interface name \"{s}\" {s}", .{ p.iface, why }, "");
                return error.Invalid;
            }
        }
        for (p.ip4) |a| try p.add(.{ .alias = .{ .v4 = a } }, f);
        for (p.ip6) |a| try p.add(.{ .alias = .{ .v6 = a } }, f);

        // 3. The root.
        if (s.root_dir) |dir| {
            // With a stage (TypeScript always gives one), a nullfs view of the directory: the
            // jail's /dev, /tmp and masks are then mounted on its own stage, never on the
            // shared directory, where another jail over the same root would unmount them.
            if (s.stage) |stage| {
                p.root = try p.path(&.{ stage, "/root" }, f);
                try p.add(.{ .mkdir = p.root }, f);
                try p.add(.{ .mount = .{ .kind = .nullfs, .fspath = p.root, .from = dir, .readonly = s.root_readonly } }, f);
            } else if (s.root_readonly) {
                f.set(errnoCode(.INVAL), "a read-only root {s} needs a stage directory on FreeBSD", .{dir}, "");
                return error.Invalid;
            } else {
                var buf: [params.path_max]u8 = undefined;
                for (s.hides) |h| if (hide.jailPath(&buf, dir, "/", h) != null) {
                    // A mask mounted straight on the directory would hide the state from the host.
                    f.set(errnoCode(.INVAL), "root {s} shows {s} (lightjail's state): it needs a stage directory to mask it", .{ dir, h }, "");
                    return error.Invalid;
                };
                p.root = dir;
            }
        } else {
            const stage = s.stage.?;
            const lowers = s.lowers;
            if (lowers.len == 0) {
                f.set(errnoCode(.INVAL), "no world or layers to build the root from", .{}, "");
                return error.Invalid;
            }
            p.root = try p.path(&.{ stage, "/root" }, f);
            try p.add(.{ .mkdir = p.root }, f);
            const upper: [:0]const u8 = s.upper orelse blk: {
                const u = try p.path(&.{ stage, "/upper" }, f);
                try p.add(.{ .mkdir = u }, f);
                try p.add(.{ .mount = .{ .kind = .tmpfs, .fspath = u, .mode = 0o755, .size = s.upper_bytes_max } }, f);
                break :blk u;
            };
            // The world read-only, each further layer over it read-only (later layers win, as
            // overlayfs on Linux), the writable upper on top.
            try p.add(.{ .mount = .{ .kind = .nullfs, .fspath = p.root, .from = lowers[0], .readonly = true } }, f);
            for (lowers[1..]) |l| try p.add(.{ .mount = .{ .kind = .unionfs, .fspath = p.root, .from = l, .readonly = true } }, f);
            try p.add(.{ .mount = .{ .kind = .unionfs, .fspath = p.root, .from = upper } }, f);
        }

        // 4. devfs with lightjail's ruleset, /tmp, the requested nullfs mounts.
        try p.mountInside(try p.path(&.{"dev"}, f), true, null, .{ .kind = .devfs, .fspath = undefined }, f);
        try p.add(.{ .devfs_rules = p.steps[p.n - 1].mount.fspath }, f);
        if (!s.no_tmp)
            try p.mountInside(try p.path(&.{"tmp"}, f), true, null, .{ .kind = .tmpfs, .fspath = undefined, .mode = 0o1777, .size = s.tmp_bytes_max }, f);
        for (s.mounts) |m| {
            const rel = try p.inside(m.dst, f);
            try p.mountInside(rel, m.create, m.src, .{ .kind = .nullfs, .fspath = undefined, .from = m.src, .readonly = m.readonly }, f);
        }

        try p.hides(s, f);

        // 5. The jail itself, last: nothing runs in it before every mount is in place.
        try p.add(.jail, f);
    }

    /// Masks every hidden host path wherever the tree would show it: through a lower layer
    /// or a root directory at `/`, or through a nullfs mount at its target (as linux.zig's
    /// hideState). The mask is a read-only nullfs view of the empty directory STAGE/empty.
    fn hides(p: *Plan, s: *const Input, f: *Failure) BuildError!void {
        var empty: ?[:0]const u8 = null;
        for (s.hides) |h| {
            for (s.lowers) |l| try p.hideAt(s, &empty, l, "/", h, f);
            if (s.root_dir) |r| try p.hideAt(s, &empty, r, "/", h, f);
            for (s.mounts) |m| try p.hideAt(s, &empty, m.src, m.dst, h, f);
        }
    }

    fn hideAt(p: *Plan, s: *const Input, empty: *?[:0]const u8, src: []const u8, dst: []const u8, hidden: []const u8, f: *Failure) BuildError!void {
        var buf: [params.path_max]u8 = undefined;
        const found = hide.jailPath(&buf, src, dst, hidden) orelse return;
        if (found.len == 0) {
            f.set(errnoCode(.ACCES), "{s} holds lightjail's state and cannot be a jail's root", .{src}, "");
            return error.Invalid;
        }
        const rel = try p.path(&.{found}, f);
        for (p.steps_()) |st| if (st == .hide and std.mem.eql(u8, st.hide.rel, rel)) return;
        if (empty.* == null) {
            const stage = s.stage orelse {
                f.set(errnoCode(.INVAL), "masking {s} needs a stage directory on FreeBSD", .{hidden}, "");
                return error.Invalid;
            };
            empty.* = try p.path(&.{ stage, "/empty" }, f);
            try p.add(.{ .mkdir = empty.*.? }, f);
        }
        const fspath = try p.path(&.{ p.root, "/", rel }, f);
        try p.add(.{ .hide = .{ .root = p.root, .rel = rel, .mount = .{ .kind = .nullfs, .fspath = fspath, .from = empty.*.?, .readonly = true } } }, f);
    }
};

fn addrText(buf: []u8, a: params.Alias) []const u8 {
    return switch (a) {
        .v4 => |v| std.fmt.bufPrint(buf, "{d}.{d}.{d}.{d}", .{ v[0], v[1], v[2], v[3] }) catch unreachable,
        .v6 => |v| blk: {
            var w = std.Io.Writer.fixed(buf);
            for (0..8) |i| {
                if (i > 0) w.writeByte(':') catch {};
                w.print("{x}", .{@as(u16, v[2 * i]) << 8 | v[2 * i + 1]}) catch {};
            }
            break :blk w.buffered();
        },
    };
}

/// How the payload ended, as the supervisor saw it.
pub const Outcome = union(enum) {
    ended: params.End,
    /// The payload failed before exec; its "E" line, reported after teardown.
    setup_failed: []const u8,
};

/// The supervisor's lifecycle over a system-call layer `Sys`, which provides:
///   rctlAdd(rule) u16, rctlRemove(filter) u16, aliasAdd(iface, Alias) u16,
///   aliasDel(iface, Alias) u16, mkdir(path) u16, ensure(root, rel, create, like) u16,
///   nmount(iov, flags) u16, unmount(path, flags) u16, devfsRules(dev_path, rules) u16,
///   jailSet(iov, flags, *jid, *desc) u16, jailRemove(jid) u16, closeFd(fd), reapAll(),
///   startPayload(jid, *pid) u16, waitPayload(pid) Outcome, report(line),
///   jailExists(name) u16 (0: no such jail, EEXIST: there is one), hasAddress(Alias) bool,
///   destroyed() bool (the owner asked for the jail's end: kill() or a timeout),
///   and `known(name) bool` (does an optional jail parameter exist).
/// Every u16 is 0 or an errno.
pub fn Supervisor(comptime Sys: type) type {
    return struct {
        /// Runs the steps in order; on failure `done` says how many completed.
        /// Stops early, with ECANCELED, when the owner asks for the jail's end.
        pub fn setup(sys: *Sys, p: *Plan, done: *usize, f: *Failure) bool {
            done.* = 0;
            p.skipped = .initEmpty();
            for (p.steps_(), 0..) |step, i| {
                if (sys.destroyed()) return fail(f, errnoCode(.CANCELED), "jail {s} destroyed during setup", .{p.name}, "");
                if (!run(sys, p, step, i, f)) return false;
                done.* += 1;
            }
            return true;
        }

        fn run(sys: *Sys, p: *Plan, step: Step, i: usize, f: *Failure) bool {
            switch (step) {
                .name_free => {
                    const e = sys.jailExists(p.name);
                    if (e == errnoCode(.EXIST)) return fail(f, e, "jail name {s} is taken by a running jail", .{p.name}, "");
                    if (e != 0) return fail(f, e, "look up jail {s}", .{p.name}, "");
                },
                .rctl => |r| {
                    const e = sys.rctlAdd(r.rule);
                    if (e != 0) return fail(f, e, "add RCTL rule {s}", .{r.rule}, "");
                },
                .alias => |a| {
                    if (sys.hasAddress(a)) {
                        p.skipped.set(i);
                        return true;
                    }
                    const e = sys.aliasAdd(p.iface, a);
                    var b: [64]u8 = undefined;
                    if (e != 0) return fail(f, e, "add address {s} to {s}", .{ addrText(&b, a), p.iface }, "");
                },
                .mkdir => |d| {
                    const e = sys.mkdir(d);
                    if (e != 0 and e != errnoCode(.EXIST)) return fail(f, e, "mkdir {s}", .{d}, "");
                },
                .ensure => |m| {
                    const e = sys.ensure(m.root, m.rel, m.create, m.like);
                    // FreeBSD's open(2) fails with EMLINK on a symlink under O_NOFOLLOW.
                    if (e == errnoCode(.LOOP) or e == errnoCode(.MLINK) or e == errnoCode(.NOTDIR))
                        return fail(f, e, "mount point /{s} in {s} is or passes a symlink or a non-directory", .{ m.rel, m.root }, "");
                    if (e != 0) return fail(f, e, "mount point /{s} in {s}", .{ m.rel, m.root }, "");
                },
                .mount => |m| {
                    params.mountParams(&p.mparams, m, &p.kmsg);
                    const e = sys.nmount(p.mparams.slice(), m.flags());
                    if (e != 0) {
                        if (m.from) |from|
                            return fail(f, e, "mount {s} {s} on {s}", .{ @tagName(m.kind), from, m.fspath }, &p.kmsg);
                        return fail(f, e, "mount {s} on {s}", .{ @tagName(m.kind), m.fspath }, &p.kmsg);
                    }
                },
                .devfs_rules => |dev| {
                    const rules = params.devfsRules(params.devfs_ruleset);
                    const e = sys.devfsRules(dev, &rules);
                    if (e != 0) return fail(f, e, "install devfs ruleset {d} on {s}", .{ params.devfs_ruleset, dev }, "");
                },
                .hide => |h| {
                    const e = sys.ensure(h.root, h.rel, false, null);
                    if (e == errnoCode(.NOENT)) {
                        p.skipped.set(i); // not in this tree: nothing to hide
                        return true;
                    }
                    if (e != 0) return fail(f, e, "resolve /{s} in {s} to hide it", .{ h.rel, h.root }, "");
                    return run(sys, p, .{ .mount = h.mount }, i, f);
                },
                .jail => return createJail(sys, p, f),
            }
            return true;
        }

        fn createJail(sys: *Sys, p: *Plan, f: *Failure) bool {
            const cfg = params.JailConfig{ .path = p.root, .name = p.name, .hostname = p.hostname, .ip4 = p.ip4, .ip6 = p.ip6, .desc = &p.desc };
            // FreeBSD 15+: an owning descriptor ties the jail to this process. 14.x rejects the
            // flag with EINVAL; then a plain persistent jail, removed by teardown.
            params.jailParams(&p.params, cfg, &Sys.known, &p.kmsg);
            var e = sys.jailSet(p.params.slice(), params.JAIL_CREATE | params.JAIL_OWN_DESC, &p.jid, &p.desc);
            if (e == errnoCode(.INVAL)) {
                var plain = cfg;
                plain.desc = null;
                p.desc = -1;
                params.jailParams(&p.params, plain, &Sys.known, &p.kmsg);
                e = sys.jailSet(p.params.slice(), params.JAIL_CREATE, &p.jid, &p.desc);
            }
            if (e != 0) return fail(f, e, "create jail {s} at {s}", .{ p.name, p.root }, &p.kmsg);
            return true;
        }

        fn fail(f: *Failure, e: u16, comptime fmt: []const u8, args: anytype, kmsg: []const u8) bool {
            f.set(e, fmt, args, kmsg);
            return false;
        }

        /// Undoes the first `done` steps in reverse order. Keeps going after a failure (every
        /// later step still gets its chance) and reports the first one.
        pub fn teardown(sys: *Sys, p: *Plan, done: usize, f: *Failure) bool {
            var ok = true;
            var i = done;
            while (i > 0) {
                i -= 1;
                if (p.skipped.isSet(i)) continue;
                if (!undo(sys, p, p.steps[i], f)) ok = false;
            }
            return ok;
        }

        fn undo(sys: *Sys, p: *Plan, step: Step, f: *Failure) bool {
            var scratch = Failure{};
            const out = if (f.errno == 0) f else &scratch;
            switch (step) {
                .rctl => |r| {
                    const e = sys.rctlRemove(r.filter);
                    if (e != 0 and e != errnoCode(.SRCH)) return fail(out, e, "remove RCTL rule {s}", .{r.filter}, "");
                },
                .alias => |a| {
                    const e = sys.aliasDel(p.iface, a);
                    var b: [64]u8 = undefined;
                    if (e != 0 and e != errnoCode(.ADDRNOTAVAIL)) return fail(out, e, "remove address {s} from {s}", .{ addrText(&b, a), p.iface }, "");
                },
                .name_free, .mkdir, .ensure, .devfs_rules => {},
                .hide => |h| return undo(sys, p, .{ .mount = h.mount }, f),
                .mount => |m| {
                    var e = sys.unmount(m.fspath, 0);
                    if (e == errnoCode(.BUSY)) e = sys.unmount(m.fspath, params.MNT_FORCE);
                    if (e != 0) return fail(out, e, "unmount {s}", .{m.fspath}, "");
                },
                .jail => {
                    // Kills every process left in the jail; then reap them so no mount is busy.
                    const e = sys.jailRemove(p.jid);
                    sys.reapAll();
                    if (p.desc >= 0) sys.closeFd(p.desc);
                    p.desc = -1;
                    if (e != 0 and e != errnoCode(.INVAL)) return fail(out, e, "remove jail {s} (jid {d})", .{ p.name, p.jid }, "");
                },
            }
            return true;
        }

        /// The whole life of one jail. Every report comes after the teardown: when the owner
        /// reads an E, X or S line, nothing of the jail is left. Returns the supervisor's exit code: 0 after a reported
        /// end, 127 after a setup failure, 1 when the payload ended but teardown left something.
        pub fn lifecycle(sys: *Sys, p: *Plan) u8 {
            var f = Failure{};
            var line: [720]u8 = undefined;
            var done: usize = 0;
            var tf = Failure{};
            if (!setup(sys, p, &done, &f)) {
                const clean = teardown(sys, p, done, &tf);
                if (sys.destroyed()) return destroyedEnd(sys, clean, &tf);
                sys.report(params.errorLine(&line, f.errno, f.text()));
                if (!clean) sys.report(teardownLine(&line, &tf));
                return 127;
            }
            if (sys.destroyed()) return destroyedEnd(sys, teardown(sys, p, done, &tf), &tf);
            var pid: i32 = -1;
            const e = sys.startPayload(p.jid, &pid);
            if (e != 0) {
                f.set(e, "fork the payload of jail {s}", .{p.name}, "");
                const clean = teardown(sys, p, done, &tf);
                sys.report(params.errorLine(&line, f.errno, f.text()));
                if (!clean) sys.report(teardownLine(&line, &tf));
                return 127;
            }
            const outcome = sys.waitPayload(pid);
            const clean = teardown(sys, p, done, &tf);
            // Whatever the payload managed to say (an attach failure as the jail went away),
            // a destroyed jail ends as killed.
            if (sys.destroyed()) return destroyedEnd(sys, clean, &tf);
            switch (outcome) {
                .ended => |end| sys.report(params.endLine(&line, end)),
                .setup_failed => |l| sys.report(l),
            }
            if (!clean) sys.report(teardownLine(&line, &tf));
            return switch (outcome) {
                .setup_failed => 127,
                .ended => if (clean) 0 else 1,
            };
        }

        /// The end of a jail its owner destroyed (the supervisor's SIGKILL, as TypeScript sees
        /// it): "S 9" after the teardown, and any teardown failure after it.
        fn destroyedEnd(sys: *Sys, clean: bool, tf: *const Failure) u8 {
            var line: [720]u8 = undefined;
            sys.report(params.endLine(&line, .{ .signaled = sig_kill }));
            if (!clean) sys.report(teardownLine(&line, tf));
            return if (clean) 0 else 1;
        }

        fn teardownLine(buf: []u8, tf: *const Failure) []const u8 {
            var t: [640]u8 = undefined;
            const text = std.fmt.bufPrint(&t, "teardown: {s}", .{tf.text()}) catch tf.text();
            return params.errorLine(buf, tf.errno, text);
        }
    };
}

// ---------------------------------------------------------------------------------------
// Tests: the order of steps against a recording fake.

const testing = std.testing;

test {
    _ = @import("freebsd_start.zig");
}

const Fake = struct {
    log: std.ArrayList(u8) = .empty,
    /// A call whose log line starts with this prefix fails with `fail_errno`.
    fail_on: ?[]const u8 = null,
    fail_errno: u16 = 0,
    /// Written into the errmsg buffer of a failing nmount/jail_set.
    fail_msg: []const u8 = "",
    /// Simulates FreeBSD 14: JAIL_OWN_DESC is rejected with EINVAL.
    no_desc: bool = true,
    outcome: Outcome = .{ .ended = .{ .exited = 0 } },
    fail_count: usize = 0,
    /// The host has every alias address already.
    addr_present: bool = false,
    /// The owner's destroy request arrives as the call whose log line starts with this runs.
    destroy_on: ?[]const u8 = null,
    destroy_requested: bool = false,

    const alloc = testing.allocator;

    fn deinit(s: *Fake) void {
        s.log.deinit(alloc);
    }

    fn rec(s: *Fake, comptime fmt: []const u8, args: anytype) u16 {
        const start = s.log.items.len;
        s.log.print(alloc, fmt, args) catch unreachable;
        const line = s.log.items[start..];
        if (s.destroy_on) |pre| if (std.mem.startsWith(u8, line, pre)) {
            s.destroy_requested = true;
        };
        s.log.append(alloc, '\n') catch unreachable;
        if (s.fail_on) |pre| if (std.mem.startsWith(u8, line, pre)) {
            s.fail_count += 1;
            return s.fail_errno;
        };
        return 0;
    }

    fn failIov(s: *Fake, iov: []params.Iovec, e: u16) void {
        if (e == 0 or s.fail_msg.len == 0) return;
        const buf: [*]u8 = @ptrCast(@constCast(iov[iov.len - 1].base.?));
        @memcpy(buf[0..s.fail_msg.len], s.fail_msg);
    }

    pub fn known(name: [:0]const u8) bool {
        return std.mem.eql(u8, name, "allow.mount.tmpfs");
    }
    pub fn jailExists(s: *Fake, name: [:0]const u8) u16 {
        return s.rec("jail_get {s}", .{name});
    }
    pub fn hasAddress(s: *Fake, a: params.Alias) bool {
        var b: [64]u8 = undefined;
        _ = s.rec("has-addr {s}", .{addrText(&b, a)});
        return s.addr_present;
    }
    pub fn destroyed(s: *Fake) bool {
        return s.destroy_requested;
    }
    pub fn rctlAdd(s: *Fake, rule: [:0]const u8) u16 {
        return s.rec("rctl+ {s}", .{rule});
    }
    pub fn rctlRemove(s: *Fake, filter: [:0]const u8) u16 {
        return s.rec("rctl- {s}", .{filter});
    }
    pub fn aliasAdd(s: *Fake, iface: [:0]const u8, a: params.Alias) u16 {
        var b: [64]u8 = undefined;
        return s.rec("alias+ {s} {s}", .{ iface, addrText(&b, a) });
    }
    pub fn aliasDel(s: *Fake, iface: [:0]const u8, a: params.Alias) u16 {
        var b: [64]u8 = undefined;
        return s.rec("alias- {s} {s}", .{ iface, addrText(&b, a) });
    }
    pub fn mkdir(s: *Fake, path: [:0]const u8) u16 {
        return s.rec("mkdir {s}", .{path});
    }
    pub fn ensure(s: *Fake, root: [:0]const u8, rel: [:0]const u8, create: bool, like: ?[:0]const u8) u16 {
        return s.rec("ensure {s} {s}{s}{s}{s}", .{ root, rel, if (create) " create" else "", if (like != null) " like=" else "", if (like) |l| l else "" });
    }
    pub fn nmount(s: *Fake, iov: []params.Iovec, flags: c_int) u16 {
        var out: [2048]u8 = undefined;
        const e = s.rec("nmount {x} {s}", .{ flags, params.renderIov(iov, &out) });
        s.failIov(iov, e);
        return e;
    }
    pub fn unmount(s: *Fake, path: [:0]const u8, flags: c_int) u16 {
        return s.rec("unmount {s}{s}", .{ path, if (flags & params.MNT_FORCE != 0) " force" else "" });
    }
    pub fn devfsRules(s: *Fake, dev: [:0]const u8, rules: []const params.DevfsRule) u16 {
        return s.rec("devfs-rules {s} {d}", .{ dev, rules.len });
    }
    pub fn jailSet(s: *Fake, iov: []params.Iovec, flags: c_int, jid: *i32, desc: *c_int) u16 {
        var out: [4096]u8 = undefined;
        const e = s.rec("jail_set {x} {s}", .{ flags, params.renderIov(iov, &out) });
        if (e != 0) {
            s.failIov(iov, e);
            return e;
        }
        if (flags & params.JAIL_OWN_DESC != 0) {
            if (s.no_desc) return errnoCode(.INVAL);
            desc.* = 9;
        }
        jid.* = 7;
        return 0;
    }
    pub fn jailRemove(s: *Fake, jid: i32) u16 {
        return s.rec("jail_remove {d}", .{jid});
    }
    pub fn closeFd(s: *Fake, fd: c_int) void {
        _ = s.rec("close {d}", .{fd});
    }
    pub fn reapAll(s: *Fake) void {
        _ = s.rec("reap", .{});
    }
    pub fn startPayload(s: *Fake, jid: i32, pid: *i32) u16 {
        pid.* = 100;
        return s.rec("start {d}", .{jid});
    }
    pub fn waitPayload(s: *Fake, pid: i32) Outcome {
        _ = s.rec("wait {d}", .{pid});
        return s.outcome;
    }
    pub fn report(s: *Fake, line: []const u8) void {
        _ = s.rec("report {s}", .{std.mem.trimRight(u8, line, "\n")});
    }

    /// The log without the long jail_set/nmount parameter lists: just the verbs and paths.
    fn verbs(s: *Fake, out: *std.ArrayList(u8)) ![]const u8 {
        var it = std.mem.splitScalar(u8, s.log.items, '\n');
        while (it.next()) |l| {
            if (l.len == 0) continue;
            if (std.mem.startsWith(u8, l, "nmount ")) {
                // "nmount 9 fstype=nullfs fspath=/s/root target=/w errmsg=<256>" -> "nmount 9 nullfs /s/root"
                var words = std.mem.splitScalar(u8, l, ' ');
                _ = words.next();
                const flags = words.next().?;
                const fstype = words.next().?["fstype=".len..];
                const fspath = words.next().?["fspath=".len..];
                try out.print(alloc, "nmount {s} {s} {s}\n", .{ flags, fstype, fspath });
            } else if (std.mem.startsWith(u8, l, "jail_set ")) {
                try out.print(alloc, "{s}\n", .{l[0 .. std.mem.indexOfScalarPos(u8, l, "jail_set ".len, ' ') orelse l.len]});
            } else try out.print(alloc, "{s}\n", .{l});
        }
        return out.items;
    }
};

const Sup = Supervisor(Fake);

const full_input = Input{
    .stage = "/s",
    .lowers = &.{ "/w", "/o1", "/o2" },
    .jail_name = "lj-t",
    .hostname = "box",
    .mounts = &.{.{ .src = "/data", .dst = "/srv/data", .readonly = true }},
    .limits = .{ .memory_bytes_max = 1 << 20, .pids_max = 32, .cpu_millis = 500 },
    .ip4 = &.{.{ 10, 0, 0, 2 }},
    .iface = "lo1",
};

fn newPlan(in: Input) !*Plan {
    const p = try testing.allocator.create(Plan);
    p.* = .{};
    var f = Failure{};
    p.build(&in, &f) catch |e| {
        testing.allocator.destroy(p);
        return e;
    };
    return p;
}

const full_setup =
    \\jail_get lj-t
    \\rctl+ jail:lj-t:memoryuse:deny=1048576
    \\rctl+ jail:lj-t:maxproc:deny=32
    \\rctl+ jail:lj-t:pcpu:deny=50
    \\has-addr 10.0.0.2
    \\alias+ lo1 10.0.0.2
    \\mkdir /s/root
    \\mkdir /s/upper
    \\nmount 8 tmpfs /s/upper
    \\nmount 9 nullfs /s/root
    \\nmount 9 unionfs /s/root
    \\nmount 9 unionfs /s/root
    \\nmount 8 unionfs /s/root
    \\ensure /s/root dev create
    \\nmount 8 devfs /s/root/dev
    \\devfs-rules /s/root/dev 13
    \\ensure /s/root tmp create
    \\nmount 8 tmpfs /s/root/tmp
    \\ensure /s/root srv/data create like=/data
    \\nmount 9 nullfs /s/root/srv/data
    \\jail_set 81
    \\jail_set 1
    \\
;
const full_teardown =
    \\jail_remove 7
    \\reap
    \\unmount /s/root/srv/data
    \\unmount /s/root/tmp
    \\unmount /s/root/dev
    \\unmount /s/root
    \\unmount /s/root
    \\unmount /s/root
    \\unmount /s/root
    \\unmount /s/upper
    \\alias- lo1 10.0.0.2
    \\rctl- jail:lj-t:pcpu
    \\rctl- jail:lj-t:maxproc
    \\rctl- jail:lj-t:memoryuse
    \\
;

test "full lifecycle: setup in order, payload, teardown in reverse, then the report" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);

    var fake = Fake{ .outcome = .{ .ended = .{ .exited = 3 } } };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    try testing.expectEqualStrings(full_setup ++ "start 7\nwait 100\n" ++ full_teardown ++ "report X 3\n", try fake.verbs(&v));

    // The mounts carry the right options and the jail the right parameters.
    const log = fake.log.items;
    try testing.expect(std.mem.indexOf(u8, log, "nmount 9 fstype=nullfs fspath=/s/root target=/w errmsg=<256>\n") != null);
    try testing.expect(std.mem.indexOf(u8, log, "nmount 9 fstype=unionfs fspath=/s/root from=/o1 copymode=transparent") != null);
    try testing.expect(std.mem.indexOf(u8, log, "nmount 8 fstype=unionfs fspath=/s/root from=/s/upper ") != null);
    try testing.expect(std.mem.indexOf(u8, log, "nmount 8 fstype=tmpfs fspath=/s/root/tmp mode=1777 errmsg") != null);
    try testing.expect(std.mem.indexOf(u8, log, "jail_set 81 path=/s/root name=lj-t host.hostname=box persist") != null);
    try testing.expect(std.mem.indexOf(u8, log, "ip4.addr=0a000002 ip6=0 ") != null);
    try testing.expect(std.mem.indexOf(u8, log, "allow.mount.notmpfs desc=-1 errmsg=<256>\n") != null);
    // The retry without the descriptor drops `desc`.
    try testing.expect(std.mem.indexOf(u8, log, "jail_set 1 path=/s/root") != null);
    try testing.expect(std.mem.indexOf(u8, log, "allow.mount.notmpfs errmsg=<256>\n") != null);
}

test "FreeBSD 15: an owning descriptor is kept and closed after jail_remove" {
    const p = try newPlan(.{ .root_dir = "/jails/w", .hostname = "w", .no_tmp = true });
    defer testing.allocator.destroy(p);
    var fake = Fake{ .no_desc = false, .outcome = .{ .ended = .{ .signaled = 9 } } };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    try testing.expectEqualStrings(
        \\jail_get w
        \\ensure /jails/w dev create
        \\nmount 8 devfs /jails/w/dev
        \\devfs-rules /jails/w/dev 13
        \\jail_set 81
        \\start 7
        \\wait 100
        \\jail_remove 7
        \\reap
        \\close 9
        \\unmount /jails/w/dev
        \\report S 9
        \\
    , try fake.verbs(&v));
}

test "a failure half way undoes exactly the completed steps, in reverse" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);

    var fake = Fake{ .fail_on = "nmount 8 fstype=devfs", .fail_errno = errnoCode(.NODEV), .fail_msg = "devfs: no such ruleset" };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    const upto = comptime full_setup[0..std.mem.indexOf(u8, full_setup, "devfs-rules").?];
    try testing.expectEqualStrings(upto ++
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/upper
        \\alias- lo1 10.0.0.2
        \\rctl- jail:lj-t:pcpu
        \\rctl- jail:lj-t:maxproc
        \\rctl- jail:lj-t:memoryuse
        \\report E 19 mount devfs on /s/root/dev: ENODEV: devfs: no such ruleset
        \\
    , try fake.verbs(&v));
    // No jail was created, so none is removed and no payload started.
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "jail_set") == null);
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "jail_remove") == null);
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "start") == null);
}

test "RACCT disabled: the first RCTL rule fails with the loader tunable named, nothing else runs" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);
    var fake = Fake{ .fail_on = "rctl+", .fail_errno = errnoCode(.NOSYS) };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    var want: [512]u8 = undefined;
    const w = try std.fmt.bufPrint(&want, "jail_get lj-t\nrctl+ jail:lj-t:memoryuse:deny=1048576\nreport E {d} add RCTL rule jail:lj-t:memoryuse:deny=1048576: ENOSYS (RACCT/RCTL is disabled: set kern.racct.enable=1 in /boot/loader.conf and reboot)\n", .{errnoCode(.NOSYS)});
    try testing.expectEqualStrings(w, try fake.verbs(&v));
}

test "jail_set failure surfaces the kernel's errmsg and undoes the mounts" {
    const p = try newPlan(.{ .stage = "/s", .lowers = &.{"/w"}, .jail_name = "lj-u" });
    defer testing.allocator.destroy(p);
    var fake = Fake{ .fail_on = "jail_set", .fail_errno = errnoCode(.INVAL), .fail_msg = "unknown parameter: allow.nofoo" };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    const log = fake.log.items;
    // Both attempts (with and without the descriptor) were made, then everything undone.
    try testing.expectEqual(@as(usize, 2), fake.fail_count);
    try testing.expect(std.mem.indexOf(u8, log, "jail_remove") == null);
    const tail = log[std.mem.lastIndexOf(u8, log, "jail_set").?..];
    try testing.expect(std.mem.indexOf(u8, tail, "unmount /s/root/tmp\nunmount /s/root/dev\nunmount /s/root\nunmount /s/root\nunmount /s/upper\nreport E ") != null);
    try testing.expect(std.mem.endsWith(u8, log, "create jail lj-u at /s/root: EINVAL: unknown parameter: allow.nofoo\n"));
}

test "teardown keeps going after a failure, retries busy mounts with force, reports after X" {
    const p = try newPlan(.{ .stage = "/s", .lowers = &.{"/w"}, .upper = "/up", .jail_name = "lj-v" });
    defer testing.allocator.destroy(p);
    var fake = Fake{ .fail_on = "unmount /s/root/dev", .fail_errno = errnoCode(.BUSY) };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 1), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    var want: [1024]u8 = undefined;
    const w = try std.fmt.bufPrint(&want,
        \\jail_get lj-v
        \\mkdir /s/root
        \\nmount 9 nullfs /s/root
        \\nmount 8 unionfs /s/root
        \\ensure /s/root dev create
        \\nmount 8 devfs /s/root/dev
        \\devfs-rules /s/root/dev 13
        \\ensure /s/root tmp create
        \\nmount 8 tmpfs /s/root/tmp
        \\jail_set 81
        \\jail_set 1
        \\start 7
        \\wait 100
        \\jail_remove 7
        \\reap
        \\unmount /s/root/tmp
        \\unmount /s/root/dev
        \\unmount /s/root/dev force
        \\unmount /s/root
        \\unmount /s/root
        \\report X 0
        \\report E {d} teardown: unmount /s/root/dev: EBUSY
        \\
    , .{errnoCode(.BUSY)});
    try testing.expectEqualStrings(w, try fake.verbs(&v));
}

test "payload setup failure: its E line after the full teardown, no X line, exit 127" {
    const p = try newPlan(.{ .root_dir = "/r", .jail_name = "lj-w" });
    defer testing.allocator.destroy(p);
    var fake = Fake{ .outcome = .{ .setup_failed = "E 2 exec nope: ENOENT\n" } };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "report X") == null);
    try testing.expect(std.mem.endsWith(u8, fake.log.items, "jail_remove 7\nreap\nunmount /r/tmp\nunmount /r/dev\nreport E 2 exec nope: ENOENT\n"));
}

test "plan rejects bad names, escaping mount targets and a read-only root without a stage" {
    const p = try testing.allocator.create(Plan);
    defer testing.allocator.destroy(p);
    p.* = .{};
    var f = Failure{};

    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/r" }, &f));
    try testing.expectEqualStrings("a FreeBSD jail needs a name (jail_name or hostname): EINVAL", f.text());

    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/r", .jail_name = "a.b" }, &f));
    try testing.expect(std.mem.startsWith(u8, f.text(), "jail name \"a.b\" contains '.'"));

    const escape = [_]Mount{.{ .src = "/src", .dst = "/a/../../etc" }};
    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/r", .jail_name = "ok", .mounts = &escape }, &f));
    try testing.expectEqualStrings("mount target /a/../../etc has a '.' or '..' component: EINVAL", f.text());

    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/r", .jail_name = "ok", .root_readonly = true }, &f));
    try testing.expectError(error.Invalid, p.build(&.{ .stage = "/s", .jail_name = "ok" }, &f));
    try testing.expectEqualStrings("no world or layers to build the root from: EINVAL", f.text());
    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/r", .jail_name = "ok", .ip4 = &.{.{ 1, 2, 3, 4 }}, .iface = "an-interface-name" }, &f));

    // With a stage, the read-only root is a nullfs view of the directory.
    try p.build(&.{ .root_dir = "/r", .jail_name = "ok", .root_readonly = true, .stage = "/st" }, &f);
    try testing.expectEqualStrings("/st/root", p.root);
    try testing.expect(p.steps[2].mount.readonly and p.steps[2].mount.kind == .nullfs);
    try testing.expectEqualStrings("/r", p.steps[2].mount.from.?);
    // The hostname defaults to the jail name; the interface to lo0.
    try testing.expectEqualStrings("ok", p.hostname);
    try testing.expectEqualStrings("lo0", p.iface);
}

test "Input.fromSpec copies what the plan needs from a decoded spec" {
    const spec_mod = @import("spec.zig");
    var e = try spec_mod.Encoder.init(testing.allocator);
    defer e.deinit();
    try e.string(.stage, "/s");
    try e.string(.lower, "/w");
    try e.string(.lower, "/o");
    try e.string(.argv, "/bin/sh");
    try e.string(.jail_name, "lj-x");
    try e.int(.flags, u32, @bitCast(spec_mod.Flags{ .no_tmp = true }));
    try e.pair(.mount, 1, "/src", "/dst");
    try e.raw(.ip4, "\x0a\x00\x00\x05");
    var lim: [24]u8 = undefined;
    std.mem.writeInt(u64, lim[0..8], 4096, .little);
    std.mem.writeInt(u64, lim[8..16], 0, .little);
    std.mem.writeInt(u64, lim[16..24], 2000, .little);
    try e.raw(.limits, &lim);
    var s = spec_mod.Spec{};
    var df: spec_mod.DecodeFailure = undefined;
    try spec_mod.decode(e.bytes(), &s, &df);
    var buf: [spec_mod.max_mounts]Mount = undefined;
    const in = Input.fromSpec(&s, &buf);
    try testing.expectEqualStrings("/s", in.stage.?);
    try testing.expectEqual(@as(usize, 2), in.lowers.len);
    try testing.expectEqualStrings("/o", in.lowers[1]);
    try testing.expectEqualStrings("lj-x", in.jail_name.?);
    try testing.expect(in.no_tmp and !in.root_readonly);
    try testing.expectEqual(@as(usize, 1), in.mounts.len);
    try testing.expect(in.mounts[0].readonly and !in.mounts[0].create);
    try testing.expectEqualStrings("/dst", in.mounts[0].dst);
    try testing.expectEqual([4]u8{ 10, 0, 0, 5 }, in.ip4[0]);
    try testing.expectEqual(@as(u64, 4096), in.limits.memory_bytes_max);
    try testing.expectEqual(@as(u64, 2000), in.limits.cpu_millis);
}

test "a symlinked mount point is refused with a text that says so" {
    const m = [_]Mount{.{ .src = "/data", .dst = "/srv" }};
    const p = try newPlan(.{ .root_dir = "/r", .jail_name = "lj-y", .no_tmp = true, .mounts = &m });
    defer testing.allocator.destroy(p);
    var fake = Fake{ .fail_on = "ensure /r srv", .fail_errno = errnoCode(.MLINK) };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    var want: [256]u8 = undefined;
    const w = try std.fmt.bufPrint(&want, "unmount /r/dev\nreport E {d} mount point /srv in /r is or passes a symlink or a non-directory: EMLINK\n", .{errnoCode(.MLINK)});
    try testing.expect(std.mem.endsWith(u8, fake.log.items, w));
}

test "the owner's destroy request during setup: the completed steps undone, then S 9, no payload" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);
    var fake = Fake{ .destroy_on = "nmount 8 fstype=devfs" };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    const upto = comptime full_setup[0..std.mem.indexOf(u8, full_setup, "devfs-rules").?];
    try testing.expectEqualStrings(upto ++
        \\unmount /s/root/dev
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/root
        \\unmount /s/upper
        \\alias- lo1 10.0.0.2
        \\rctl- jail:lj-t:pcpu
        \\rctl- jail:lj-t:maxproc
        \\rctl- jail:lj-t:memoryuse
        \\report S 9
        \\
    , try fake.verbs(&v));
}

test "the owner's destroy request while the payload runs: full teardown, then S 9 whatever the payload said" {
    const p = try newPlan(.{ .root_dir = "/r", .jail_name = "lj-k", .no_tmp = true });
    defer testing.allocator.destroy(p);
    // The jail went away under an unattached payload, which reported its attach failure.
    var fake = Fake{ .destroy_on = "wait", .outcome = .{ .setup_failed = "E 22 attach to jail lj-k (jid 7): EINVAL\n" } };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    try testing.expect(std.mem.endsWith(u8, fake.log.items, "wait 100\njail_remove 7\nreap\nunmount /r/dev\nreport S 9\n"));
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "report E") == null);
}

test "a jail name in use is refused before any RCTL rule, alias or mount" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);
    var fake = Fake{ .fail_on = "jail_get", .fail_errno = errnoCode(.EXIST) };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 127), Sup.lifecycle(&fake, p));
    var want: [256]u8 = undefined;
    const w = try std.fmt.bufPrint(&want, "jail_get lj-t\nreport E {d} jail name lj-t is taken by a running jail: EEXIST\n", .{errnoCode(.EXIST)});
    try testing.expectEqualStrings(w, fake.log.items);
}

test "an address the host has already is neither added nor removed" {
    const p = try newPlan(full_input);
    defer testing.allocator.destroy(p);
    var fake = Fake{ .addr_present = true };
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "has-addr 10.0.0.2\n") != null);
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "alias") == null);
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "rctl- jail:lj-t:memoryuse\nreport X 0\n") != null);
}

test "a -d root with a stage is a nullfs view: each jail's /dev and /tmp on its own stage" {
    var logs: [2][]const u8 = undefined;
    var fakes = [2]Fake{ .{}, .{} };
    defer for (&fakes) |*f| f.deinit();
    for ([_][:0]const u8{ "/st1", "/st2" }, 0..) |stage, i| {
        const p = try newPlan(.{ .root_dir = "/jails/w", .stage = stage, .jail_name = "lj-d" });
        defer testing.allocator.destroy(p);
        try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fakes[i], p));
        logs[i] = fakes[i].log.items;
    }
    try testing.expect(std.mem.indexOf(u8, logs[0], "nmount 8 fstype=nullfs fspath=/st1/root target=/jails/w errmsg") != null);
    try testing.expect(std.mem.indexOf(u8, logs[0], "unmount /st1/root/dev\nunmount /st1/root\n") != null);
    try testing.expect(std.mem.indexOf(u8, logs[1], "unmount /st2/root/tmp\nunmount /st2/root/dev\nunmount /st2/root\n") != null);
    for (logs) |l| try testing.expect(std.mem.indexOf(u8, l, "/jails/w/") == null);
}

test "lightjail's state is masked wherever a layer, a -d root or a nullfs mount would show it" {
    // A host world binds the host's /usr; the state root is /usr/local/lj.
    const m = [_]Mount{ .{ .src = "/usr", .dst = "/usr", .readonly = true }, .{ .src = "/srv/data", .dst = "/data" } };
    const hides = [_][:0]const u8{"/usr/local/lj"};
    const p = try newPlan(.{ .stage = "/s", .lowers = &.{"/lj/worlds/host"}, .jail_name = "lj-h", .no_tmp = true, .mounts = &m, .hides = &hides });
    defer testing.allocator.destroy(p);
    var fake = Fake{};
    defer fake.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake, p));
    var v: std.ArrayList(u8) = .empty;
    defer v.deinit(testing.allocator);
    const got = try fake.verbs(&v);
    try testing.expect(std.mem.indexOf(u8, got,
        \\nmount 9 nullfs /s/root/usr
        \\ensure /s/root data create like=/srv/data
        \\nmount 8 nullfs /s/root/data
        \\mkdir /s/empty
        \\ensure /s/root usr/local/lj
        \\nmount 9 nullfs /s/root/usr/local/lj
        \\jail_set 81
    ) != null);
    try testing.expect(std.mem.indexOf(u8, fake.log.items, "fspath=/s/root/usr/local/lj target=/s/empty ") != null);
    try testing.expect(std.mem.indexOf(u8, got, "reap\nunmount /s/root/usr/local/lj\nunmount /s/root/data\nunmount /s/root/usr\n") != null);

    // The world itself holds the state root (a -d root of /, say): masked at its jail path.
    const p2 = try newPlan(.{ .root_dir = "/", .stage = "/s2", .jail_name = "lj-h2", .no_tmp = true, .hides = &hides });
    defer testing.allocator.destroy(p2);
    var fake2 = Fake{ .fail_on = "ensure /s2/root usr/local/lj", .fail_errno = errnoCode(.NOENT) };
    defer fake2.deinit();
    try testing.expectEqual(@as(u8, 0), Sup.lifecycle(&fake2, p2));
    // Not in this tree: nothing mounted there, nothing unmounted.
    try testing.expect(std.mem.indexOf(u8, fake2.log.items, "fspath=/s2/root/usr/local/lj") == null);
    try testing.expect(std.mem.indexOf(u8, fake2.log.items, "unmount /s2/root/usr/local/lj") == null);
    try testing.expect(std.mem.indexOf(u8, fake2.log.items, "unmount /s2/root/dev\nunmount /s2/root\nreport X 0\n") != null);
}

test "masks refuse a root that is the state itself, and a -d root without a stage that shows it" {
    const hides = [_][:0]const u8{"/var/lj"};
    const p = try testing.allocator.create(Plan);
    defer testing.allocator.destroy(p);
    p.* = .{};
    var f = Failure{};
    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/var/lj", .stage = "/s", .jail_name = "a", .hides = &hides }, &f));
    try testing.expectEqualStrings("/var/lj holds lightjail's state and cannot be a jail's root: EACCES", f.text());
    // Without a stage the mask would be mounted on the host's own /var/lj.
    try testing.expectError(error.Invalid, p.build(&.{ .root_dir = "/var", .jail_name = "a", .hides = &hides }, &f));
    try testing.expect(std.mem.startsWith(u8, f.text(), "root /var shows /var/lj (lightjail's state)"));
    // A root that does not contain it needs no stage.
    try p.build(&.{ .root_dir = "/jails/w", .jail_name = "a", .hides = &hides }, &f);
    for (p.steps_()) |st| try testing.expect(st != .hide);
}
