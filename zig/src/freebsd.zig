//! FreeBSD backend: being written (issue: FreeBSD backend of the shim).
comptime {
    @compileError("the FreeBSD backend is not written yet");
}
