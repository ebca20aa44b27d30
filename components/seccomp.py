"""The cages' own seccomp profile: the same filter on every engine, whatever Docker's version ships.

Docker's built-in default profile changes with the engine: Docker 20.10 (Debian's `docker.io`, the
test machine) allows `io_uring_setup` and AF_VSOCK sockets, later engines refuse them. A cage must not
depend on which engine a host runs, so both cage containers get this profile as the security option
`seccomp=<profile JSON>` (the Docker API takes the profile's text; no file on the host).

It follows the structure of Docker's default profile (an allowlist, everything else refused with
EPERM) for a container without capabilities (the policy pack refuses any capability), with these
differences, each a decision of the attack-findings issue (docs/attack-findings.md):

- io_uring (`io_uring_setup`, `io_uring_enter`, `io_uring_register`) is refused: a large kernel
  attack surface whose operations also bypass per-syscall filtering;
- `socket` is allowed only for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK: AF_VSOCK (a channel to the
  hypervisor that network namespaces and nftables do not cover) and every rarer family are refused;
- `ptrace`, `process_vm_readv`, `process_vm_writev` are refused: a claw cannot stop or read its own
  init (or any process of its cage) even where `kernel.yama.ptrace_scope` is not available;
- the 32-bit x86 ABIs are not allowed at all (no sub-architectures), so `socketcall` and friends,
  whose arguments a filter cannot inspect, cannot be used to get around the socket rule;
- `modify_ldt` is refused (not used by 64-bit programs).

`memfd_create` stays allowed: refusing it does not stop native code in a cage that runs Python
(ctypes maps executable memory directly), and programs use it for ordinary anonymous files. What holds
instead is that any code the claw runs has this same filter, no capability and no_new_privs.
"""

from __future__ import annotations

import json

# Returned for every refused syscall (EPERM), as Docker's default does.
ERRNO_EPERM = 1
ERRNO_ENOSYS = 38

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
AF_VSOCK = 40
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)

# clone() flags that create namespaces (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET):
# a clone with any of them is refused, the others (threads, fork) are allowed.
CLONE_NAMESPACE_FLAGS = 0x7E020000

REFUSED = {
    "io_uring_setup": "io_uring: kernel attack surface; its operations bypass per-syscall filtering",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    "ptrace": "no tracing of the cage's own processes (its init included), with or without Yama",
    "process_vm_readv": "reads another process's memory (ptrace access)",
    "process_vm_writev": "writes another process's memory (ptrace access)",
    "modify_ldt": "not used by 64-bit programs",
    "socketcall": "32-bit multiplexer whose arguments a filter cannot inspect",
}

# What a capability-less container may call without conditions, grouped for reading.
ALLOWED: tuple[str, ...] = (
    # files and directories
    *("access", "chdir", "chmod", "chown", "close", "close_range", "copy_file_range", "creat", "dup", "dup2"),
    *("dup3", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchown"),
    *("fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fremovexattr", "fsetxattr"),
    *("fstat", "fstatfs", "fsync", "ftruncate", "getcwd", "getdents", "getdents64", "getxattr", "lchown"),
    *("lgetxattr", "link", "linkat", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat"),
    *("mkdir", "mkdirat", "mknod", "mknodat", "name_to_handle_at", "newfstatat", "open", "openat", "openat2"),
    *("pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink"),
    *("readlinkat", "readv", "removexattr", "rename", "renameat", "renameat2", "rmdir", "sendfile", "setxattr"),
    *("splice", "stat", "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee"),
    *("truncate", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimes", "futimesat", "vmsplice"),
    *("write", "writev", "fanotify_mark", "inotify_add_watch", "inotify_init", "inotify_init1"),
    *("inotify_rm_watch",),
    # asynchronous I/O (the old AIO interface, not io_uring)
    *("io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit", "ioctl"),
    # memory
    *("brk", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock", "mlock2"),
    *("mlockall", "mmap", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc"),
    *("pkey_free", "pkey_mprotect", "remap_file_pages", "process_mrelease"),
    # processes, threads, signals
    *("arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork", "futex"),
    *("futex_waitv", "get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area", "getcpu"),
    *("getegid", "geteuid", "getgid", "getgroups", "getpgid", "getpgrp", "getpid", "getppid", "getpriority"),
    *("getresgid", "getresuid", "getrlimit", "getrusage", "getsid", "gettid", "getuid", "ioprio_get"),
    *("ioprio_set", "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64"),
    *("restart_syscall", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo"),
    *("rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity"),
    *("sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min"),
    *("sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr", "sched_setparam"),
    *("sched_setscheduler", "sched_yield", "seccomp", "setfsgid", "setfsuid", "setgid", "setgroups"),
    *("setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "setsid"),
    *("set_tid_address", "setuid", "sigaltstack", "signalfd", "signalfd4", "wait4", "waitid"),
    *("landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self"),
    # time
    *("alarm", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "getitimer", "setitimer"),
    *("gettimeofday", "nanosleep", "time", "timer_create", "timer_delete", "timer_getoverrun"),
    *("timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime", "times"),
    *("adjtimex",),
    # waiting and events
    *("epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd"),
    *("eventfd2", "pause", "pipe", "pipe2", "poll", "ppoll", "pselect6", "select"),
    # networking (socket itself: the families below only)
    *("accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recvfrom"),
    *("recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketpair"),
    # System V and POSIX IPC (the cage has its own IPC namespace)
    *("mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink", "msgctl"),
    *("msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop", "shmat", "shmctl", "shmdt"),
    *("shmget",),
    # system information
    *("getrandom", "sysinfo", "uname"),
)

# Docker's JSON names for the architectures a host may have (Hetzner: x86-64 and arm64).
ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64")


def profile() -> dict:
    """The profile as Docker's JSON format (the `seccomp=` security option) reads it."""
    overlap = sorted(set(ALLOWED) & set(REFUSED))
    if overlap:  # a programming error: a refused syscall may never sit in the allowlist
        raise ValueError(f"syscalls both allowed and refused: {overlap}")
    syscalls: list[dict] = [{"names": sorted(set(ALLOWED)), "action": "SCMP_ACT_ALLOW"}]
    syscalls += [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": family, "op": "SCMP_CMP_EQ"}]}
        for family in SOCKET_FAMILIES
    ]
    # personality(2): only the values glibc and Python query or use (PER_LINUX, UNAME26 query, ...).
    syscalls += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
        for v in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)
    ]
    syscalls.append(
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }
    )
    # clone3 cannot be filtered on its flags (they are in memory): ENOSYS makes libc fall back to clone.
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ERRNO_ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ERRNO_EPERM,
        "archMap": [{"architecture": arch, "subArchitectures": []} for arch in ARCHITECTURES],
        "syscalls": syscalls,
    }


def profile_json() -> str:
    """Compact, key-sorted JSON: the same profile is the same bytes (no diff without a change)."""
    return json.dumps(profile(), sort_keys=True, separators=(",", ":"))


def security_opt() -> str:
    return "seccomp=" + profile_json()
