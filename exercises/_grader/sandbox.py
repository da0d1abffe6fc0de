"""What a worker process does to itself before it runs a learner's code: limits and walls.

The audit hook of :mod:`_grader.worker` sees what Python's own functions do; these walls hold
whatever route the learner's code takes, because the operating system keeps them:

- **limits** (POSIX): a cap on what the worker may write to files (its printed output included)
  and, where the platform allows one, on its address space. macOS refuses an address-space limit
  (``setrlimit(RLIMIT_AS)`` raises ``ValueError``), so there only the file cap holds; Windows has
  neither (``resource`` does not exist there).
- **another user** (POSIX, when the grader runs as root, as on Gradescope): the worker becomes
  ``nobody``, so the kernel refuses it any signal, limit or debugger on the grading processes,
  which stay root's.
- **a system-call filter** (Linux, x86-64 and arm64): seccomp refuses, with ``EPERM``, every call
  that reaches another process (signals, limits, priorities, CPU affinity, ``ptrace``, reading or
  writing another process's memory, pidfds), a new session or process group, and ``execve``. A
  filter cannot be removed once set, and ``no_new_privs`` keeps it in every child.

:func:`confine` applies what the platform has and returns the names of what holds, for the tests
and the README's table.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

LOG_LIMIT = 64 * 1024 * 1024  # bytes a worker may write to files (its printed output included)
MEMORY_LIMIT = 8 * 1024**3  # address space of a worker (torch takes under 1 GB): a runaway allocation is a MemoryError

# System calls that reach another process, by architecture: name -> number.
SYSCALLS = {
    "x86_64": dict(kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, ptrace=101,
                   prlimit64=302, setpriority=141, ioprio_set=251, sched_setaffinity=203, sched_setparam=142,
                   sched_setscheduler=144, sched_setattr=314, setsid=112, setpgid=109, execve=59, execveat=322,
                   process_vm_readv=310, process_vm_writev=311, kcmp=312, pidfd_send_signal=424, pidfd_open=434,
                   pidfd_getfd=438, process_madvise=440),
    "aarch64": dict(kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, ptrace=117,
                    prlimit64=261, setpriority=140, ioprio_set=30, sched_setaffinity=122, sched_setparam=118,
                    sched_setscheduler=119, sched_setattr=274, setsid=157, setpgid=154, execve=221, execveat=281,
                    process_vm_readv=270, process_vm_writev=271, kcmp=272, pidfd_send_signal=424, pidfd_open=434,
                    pidfd_getfd=438, process_madvise=440),
}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Allowed when the first argument names the worker itself (0 or its own pid): a process may signal,
# limit or schedule itself (abort() signals itself; torch sets its own threads' affinity with 0).
SELF_ONLY = {"kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "prlimit64", "sched_setaffinity",
             "sched_setparam", "sched_setscheduler", "sched_setattr", "setpgid"}

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | errno.EPERM
_X32_BIT = 0x40000000


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(arch: str, pid: int) -> bytes:
    """The BPF program: refuse what reaches another process, allow everything else (see the module's doc)."""
    numbers = SYSCALLS[arch]
    prog = [_op(_LD_W_ABS, 4), _op(_JEQ_K, AUDIT_ARCH[arch], jt=1), _op(_RET_K, _DENY),  # another ABI: refused
            _op(_LD_W_ABS, 0)]
    if arch == "x86_64":
        prog += [_op(_JGE_K, _X32_BIT, jf=1), _op(_RET_K, _DENY)]  # the x32 numbers of the same calls
    for name, number in sorted(numbers.items()):
        if name in SELF_ONLY:  # nr == number ? (low 32 bits of arg0 in {0, pid} ? allow : deny) : next call
            prog += [_op(_JEQ_K, number, jf=5), _op(_LD_W_ABS, 16), _op(_JEQ_K, 0, jt=2), _op(_JEQ_K, pid, jt=1),
                     _op(_RET_K, _DENY), _op(_RET_K, _ALLOW)]
        else:
            prog += [_op(_JEQ_K, number, jf=1), _op(_RET_K, _DENY)]
    prog.append(_op(_RET_K, _ALLOW))
    return b"".join(prog)


def install_seccomp() -> bool:
    """Linux only: set the filter on this process (and so on every thread and child it makes afterwards)."""
    arch = platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
    if not sys.platform.startswith("linux") or arch not in SYSCALLS:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    code = seccomp_program(arch, os.getpid())
    filters = ctypes.create_string_buffer(code, len(code))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Program(len(code) // 8, ctypes.addressof(filters))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: required to set a filter without privileges
        return False
    return libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def set_limits() -> list[str]:
    """The resource limits the platform lets a process set on itself; the names of those that hold."""
    try:
        import resource
    except ImportError:  # Windows
        return []
    held = []
    for name, value in (("RLIMIT_FSIZE", LOG_LIMIT), ("RLIMIT_AS", MEMORY_LIMIT)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
            held.append(name)
        except (ValueError, OSError, AttributeError):  # macOS: RLIMIT_AS 'current limit exceeds maximum limit'
            pass
    return held


def readable_by_anyone(path: str) -> bool:
    """Whether a user with no rights of its own can read ``path`` (every folder above it searchable)."""
    import stat
    try:
        mode = os.stat(path).st_mode
        if not mode & (stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)):
            return False
        return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in _parents(path))
    except OSError:
        return False


def _parents(path: str) -> list[str]:
    parents, path = [], os.path.dirname(os.path.abspath(path))
    while True:
        parents.append(path)
        if os.path.dirname(path) == path:
            return parents
        path = os.path.dirname(path)


def drop_privileges(needed: tuple[str, ...] = ()) -> bool:
    """POSIX, as root only: become ``nobody`` (no supplementary groups), so no grading process is in reach.

    Only when ``nobody`` can read what the worker still reads later (Python's standard library and
    site-packages, the folders in ``needed``): a Python installed under ``/root`` stays root's.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    import sysconfig
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")} | set(needed)
    if not all(readable_by_anyone(p) for p in paths):
        return False
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return False
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    if sys.platform.startswith("linux"):  # a change of user clears "die with the parent": set it again
        try:
            ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        except (OSError, AttributeError):
            pass
    return True


def protect_grading_process() -> bool:
    """Linux: the pytest process is not "dumpable", so a process of the same user cannot open its memory
    (``/proc/PID/mem``) or attach to it; called once in the grading process itself."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        return False


def confine(needed: tuple[str, ...] = ()) -> list[str]:
    """Everything this platform allows, in order (limits, then another user, then the filter); what holds."""
    held = set_limits()
    if drop_privileges(needed):
        held.append("user nobody")
    if install_seccomp():
        held.append("seccomp")
    return held
