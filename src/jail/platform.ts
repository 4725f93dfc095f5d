/**
 * The numbers that differ between the kernels lightjail runs on: the errno the shim returns for
 * "not yet", the signal numbers the owner sends, and what the owner sends to end a jail. One
 * table per platform, chosen by a parameter so the FreeBSD column is tested on Linux.
 */
export type JailPlatform = "linux" | "freebsd";

export type SignalName =
  | "SIGHUP"
  | "SIGINT"
  | "SIGQUIT"
  | "SIGKILL"
  | "SIGUSR1"
  | "SIGUSR2"
  | "SIGTERM"
  | "SIGCONT"
  | "SIGWINCH";

export interface PlatformNumbers {
  /** errno of "try again": lj_reap's answer while the jail's first process still runs. */
  EAGAIN: number;
  signals: Record<SignalName, number>;
  /**
   * What `kill()` sends the jail's first process for SIGKILL. Linux: SIGKILL (the kernel tears
   * the namespaces down). FreeBSD: SIGINFO, the supervisor's destroy request: it removes the
   * jail and runs its teardown (mounts, aliases, RCTL rules); SIGKILL would skip all of it.
   */
  destroy: number;
}

const LINUX: PlatformNumbers = {
  EAGAIN: 11,
  signals: {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGKILL: 9,
    SIGUSR1: 10,
    SIGUSR2: 12,
    SIGTERM: 15,
    SIGCONT: 18,
    SIGWINCH: 28,
  },
  destroy: 9,
};

/** sys/errno.h and sys/signal.h of FreeBSD 14 and 15. */
const FREEBSD: PlatformNumbers = {
  EAGAIN: 35,
  signals: {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGKILL: 9,
    SIGUSR1: 30,
    SIGUSR2: 31,
    SIGTERM: 15,
    SIGCONT: 19,
    SIGWINCH: 28,
  },
  destroy: 29, // SIGINFO
};

export function platformNumbers(platform: string = process.platform): PlatformNumbers {
  return platform === "freebsd" ? FREEBSD : LINUX;
}
