//! clone3 with a child function on a stack of our own, as `linux.clone` does for clone(2).
//! The jail uses it for CLONE_INTO_CGROUP: on a cgroup v2 host the kernel starts the child in
//! the jail's cgroup, so the jail neither writes `cgroup.procs` nor waits for the move (which
//! takes the kernel's threadgroup lock for writing: an RCU grace period on kernels without
//! `favordynmods`).
const std = @import("std");
const builtin = @import("builtin");
const linux = std.os.linux;

/// struct clone_args (linux/sched.h), up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
pub const Args = extern struct {
    flags: u64 = 0,
    pidfd: u64 = 0,
    child_tid: u64 = 0,
    parent_tid: u64 = 0,
    exit_signal: u64 = 0,
    stack: u64 = 0,
    stack_size: u64 = 0,
    tls: u64 = 0,
    set_tid: u64 = 0,
    set_tid_size: u64 = 0,
    cgroup: u64 = 0,
};

/// Whether this architecture has the entry below; elsewhere callers use clone(2).
pub const supported = switch (builtin.cpu.arch) {
    .x86_64, .aarch64 => true,
    else => false,
};

const CGROUP2_SUPER_MAGIC = 0x63677270;

/// Whether `fd` (O_PATH is enough) is a directory of a cgroup v2 hierarchy.
pub fn isCgroup2(fd: i32) bool {
    // struct statfs: f_type is the first field, a long on every 64-bit architecture.
    var buf: [16]u64 align(8) = undefined;
    const rc = linux.syscall2(.fstatfs, @as(usize, @bitCast(@as(isize, fd))), @intFromPtr(&buf));
    return linux.E.init(rc) == .SUCCESS and @as(u32, @truncate(buf[0])) == CGROUP2_SUPER_MAGIC;
}

/// clone3(args): the child runs `func(arg)` on the stack the args name and exits with its
/// result; the parent gets the child's pid (or an errno, as raw syscalls return them). The
/// stack's top (stack + stack_size) must be 16-byte aligned.
pub fn clone3(args: *const Args, func: *const fn (usize) callconv(.c) u8, arg: usize) usize {
    if (!supported) return @bitCast(-@as(isize, @intFromEnum(linux.E.NOSYS)));
    const call: *const fn (*const Args, usize, *const fn (usize) callconv(.c) u8, usize) callconv(.c) usize = @ptrCast(&entry);
    return call(args, @sizeOf(Args), func, arg);
}

/// The kernel keeps every register but the result (and, on x86_64, rcx and r11) across the
/// call, and starts the child with the same registers on the new stack: the function and its
/// argument travel in registers the call leaves alone.
fn entry() callconv(.naked) usize {
    switch (builtin.cpu.arch) {
        .x86_64 => asm volatile (
        // rdi = args, rsi = size, rdx = func, rcx = arg (the syscall clobbers rcx).
            \\      movq %%rdx,%%r9
            \\      movq %%rcx,%%r8
            \\      movl $435,%%eax // SYS_clone3
            \\      syscall
            \\      testq %%rax,%%rax
            \\      jz 1f
            \\      retq
            \\1:
            \\      xorl %%ebp,%%ebp
            \\      movq %%r8,%%rdi
            \\      callq *%%r9
            \\      movl %%eax,%%edi
            \\      movl $60,%%eax // SYS_exit
            \\      syscall
            \\      ud2
        ),
        .aarch64 => asm volatile (
        // x0 = args, x1 = size, x2 = func, x3 = arg.
            \\      mov x8,#435 // SYS_clone3
            \\      svc #0
            \\      cbz x0,1f
            \\      ret
            \\1:
            \\      mov fp,#0
            \\      mov lr,#0
            \\      mov x0,x3
            \\      blr x2
            \\      mov x8,#93 // SYS_exit
            \\      svc #0
            \\      brk #0
        ),
        else => asm volatile (""),
    }
}

test "clone3 runs the function on its own stack and the parent gets its pid" {
    if (!supported) return error.SkipZigTest;
    const Shared = struct {
        var seen: usize = 0;
        fn run(arg: usize) callconv(.c) u8 {
            @atomicStore(usize, &seen, arg, .release);
            return 7;
        }
    };
    const stack_size = 64 * 1024;
    const stack = try std.testing.allocator.alignedAlloc(u8, .@"16", stack_size);
    defer std.testing.allocator.free(stack);
    var tid: i32 align(4) = 0;
    const args = Args{
        .flags = linux.CLONE.VM | linux.CLONE.CHILD_CLEARTID,
        .child_tid = @intFromPtr(&tid),
        .exit_signal = linux.SIG.CHLD,
        .stack = @intFromPtr(stack.ptr),
        .stack_size = stack_size,
    };
    tid = 1;
    const rc = clone3(&args, Shared.run, 42);
    if (linux.E.init(rc) == .NOSYS) return error.SkipZigTest;
    try std.testing.expectEqual(linux.E.SUCCESS, linux.E.init(rc));
    var status: u32 = 0;
    _ = linux.waitpid(@intCast(rc), &status, 0);
    try std.testing.expect(linux.W.IFEXITED(status));
    try std.testing.expectEqual(@as(u32, 7), linux.W.EXITSTATUS(status));
    try std.testing.expectEqual(@as(usize, 42), @atomicLoad(usize, &Shared.seen, .acquire));
}
