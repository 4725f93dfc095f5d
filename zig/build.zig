const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});
    const os = target.result.os.tag;

    const lib_mod = b.createModule(.{
        .root_source_file = b.path("jail.zig"),
        .target = target,
        .optimize = optimize,
        // FreeBSD's jail, nmount and rctl calls go through libc; Linux uses raw syscalls only.
        .link_libc = os == .freebsd,
        .pic = true,
    });

    if (os == .linux) {
        // pid 1 of every jail: a tiny static program embedded in the library.
        const keeper = b.addExecutable(.{
            .name = "lj-keeper",
            .root_module = b.createModule(.{
                .root_source_file = b.path("src/keeper.zig"),
                .target = target,
                .optimize = .ReleaseSmall,
                .single_threaded = true,
                .strip = true,
                .link_libc = false,
            }),
        });
        lib_mod.addAnonymousImport("keeper_bin", .{ .root_source_file = keeper.getEmittedBin() });
        b.installArtifact(keeper);

        // The native ljspawn: the command's fast path, without a JavaScript runtime.
        const ljspawn = b.addExecutable(.{
            .name = "ljspawn",
            .root_module = b.createModule(.{
                .root_source_file = b.path("src/ljspawn.zig"),
                .target = target,
                .optimize = optimize,
                .link_libc = false,
            }),
        });
        ljspawn.root_module.addAnonymousImport("keeper_bin", .{ .root_source_file = keeper.getEmittedBin() });
        b.installArtifact(ljspawn);

        // ljexec: a command run in a running jail (an exec probe), as confined as its payload.
        const ljexec = b.addExecutable(.{
            .name = "ljexec",
            .root_module = b.createModule(.{
                .root_source_file = b.path("src/ljexec.zig"),
                .target = target,
                .optimize = optimize,
                .single_threaded = true,
                .strip = true,
                .link_libc = false,
            }),
        });
        b.installArtifact(ljexec);
    }

    const lib = b.addLibrary(.{ .name = "lightjail", .linkage = .dynamic, .root_module = lib_mod });
    b.installArtifact(lib);

    // Unit tests: the pure parts of both backends run on any host.
    const test_step = b.step("test", "Run the shim's unit tests");
    for ([_][]const u8{ "src/spec.zig", "src/errtext.zig", "src/hide.zig", "src/seccomp.zig", "src/freebsd_params.zig", "src/freebsd_steps.zig", "src/warm.zig", "src/idmap.zig", "src/clone3.zig", "src/table.zig", "src/ended.zig", "src/cgroup_layout.zig", "src/netlink.zig", "src/netwire.zig", "src/netlease.zig", "src/ljexec.zig" }) |file| {
        const t = b.addTest(.{ .root_module = b.createModule(.{
            .root_source_file = b.path(file),
            .target = b.graph.host,
        }) });
        test_step.dependOn(&b.addRunArtifact(t).step);
    }
    // The Linux backend's mount and cgroup helpers where they can run.
    if (b.graph.host.result.os.tag == .linux) {
        for ([_][]const u8{ "src/linux_mounts.zig", "src/linux_cgroups.zig" }) |file| {
            const t = b.addTest(.{ .root_module = b.createModule(.{
                .root_source_file = b.path(file),
                .target = b.graph.host,
            }) });
            test_step.dependOn(&b.addRunArtifact(t).step);
        }
    }

    // The FreeBSD backend cannot run on our Linux machines: `zig build cross` builds it for
    // both FreeBSD targets (libc from Zig's FreeBSD 14.0 stubs) into lib/<triple>/.
    const cross_step = b.step("cross", "Build the library for x86_64- and aarch64-freebsd.14.0");
    for ([_][]const u8{ "x86_64-freebsd.14.0", "aarch64-freebsd.14.0" }) |triple| {
        const query = std.Target.Query.parse(.{ .arch_os_abi = triple }) catch unreachable;
        const cross_lib = b.addLibrary(.{ .name = "lightjail", .linkage = .dynamic, .root_module = b.createModule(.{
            .root_source_file = b.path("jail.zig"),
            .target = b.resolveTargetQuery(query),
            .optimize = optimize,
            .link_libc = true,
            .pic = true,
        }) });
        const install = b.addInstallArtifact(cross_lib, .{ .dest_dir = .{ .override = .{ .custom = b.fmt("lib/{s}", .{triple}) } } });
        cross_step.dependOn(&install.step);
    }
}
