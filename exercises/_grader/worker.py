"""The worker: the only kind of process that runs a learner's code.

Two ways to start one (``client.START``, forced with ``MINIGPT_GRADER_START``):

- **fork** (Linux's default): ``client.py`` starts one "zygote" per grading
  session (``python -I -c BOOT EXERCISES zygote FD``: a fresh interpreter
  that ignores PYTHONPATH and the user's site folder). The zygote imports
  torch and the grader's helpers once, warms them up, and forks one worker
  per chapter on request: a worker costs milliseconds instead of seconds.
  The zygote itself never imports a learner's file.
- **spawn** (macOS and Windows, where ``fork`` after torch is unsafe or
  missing): one fresh interpreter per chapter (``... worker TARGET TEST``),
  talking over its stdin and stdout.

A worker imports the learner's ``exNN_<topic>.py`` from its target folder
only, walls itself in (:mod:`_grader.sandbox`, then an audit hook), and
answers requests one at a time:

- ``import``: import the learner's file;
- ``call``: run one learner function on the given arguments and send back its
  result and the arguments as they are after the call (to spot changes made in
  place);
- ``probe``: run a grader-owned probe, a ``probe_*`` function of the chapter's
  grader file (or of ``cases.py``), which drives the learner's classes
  (builds a model, trains it a few steps, ...) and returns plain data;
- ``case``: run a seeded snapshot case of ``cases.py``.

Whatever the learner's code does here (patch torch, rewrite the graders,
exit, loop forever) changes only what this worker sends back; the pytest
process decides, and kills the worker's process tree at the time limit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import sys
import traceback
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # exercises/_grader/
GRADER = PACKAGE.parent  # exercises/: the graders (test_exNN_*.py) and the learner's own files
SOLUTIONS, SNAPSHOT_DIR = GRADER.parent / "solutions", PACKAGE / "snapshots"
if str(GRADER) not in sys.path:
    sys.path.insert(0, str(GRADER))

import torch  # noqa: E402

from _grader import sandbox  # noqa: E402
from _grader.cases import SNAPSHOT_CASES  # noqa: E402
from _grader.protocol import plain, read_frame, write_frame  # noqa: E402
from _grader.integrity import RULES  # noqa: E402
from _grader.target import load, use_target  # noqa: E402
from _grader.watch import watched  # noqa: E402

TARGET: Path = GRADER
GRADER_MODULE = None
BY_HAND: list[str] = []  # the covered library functions the learner's code called in the current request


def _load_by_path(name: str, file: Path):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FORBIDDEN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                    "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "os.startfile", "_winapi.CreateProcess",
                    "_winapi.OpenProcess", "_winapi.TerminateProcess", "signal.pthread_kill")
GRADER_MODULES = ("_grader", "conftest", "_grading", "_cases", "_client", "_learner", "_worker", "_protocol",
                  "_target", "_integrity", "_oracles")  # the package and the old names of its modules
PROCESS_MODULES = ("_posixsubprocess",)  # fork_exec starts a process and raises no audit event (Python 3.11)
CTYPES_EVENTS = ("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function")  # raw C calls
WRITING_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "shutil.move", "os.truncate",
                  "os.chmod", "os.chown", "os.symlink", "os.link", "os.utime")


def _no_processes(*args, **kwargs):
    raise PermissionError("exercise code may not start processes (_posixsubprocess.fork_exec)")


def _disarm_fork_exec() -> None:
    """Replace the one way to start a process that no audit hook sees (it outlives the worker's group)."""
    import _posixsubprocess
    import subprocess
    _posixsubprocess.fork_exec = subprocess._fork_exec = _no_processes


def _guard_against(off_limits: tuple[str, ...], project: str, allow_minigpt: bool):
    """An audit hook that keeps the learner's code to computing.

    Off limits: reading the answers and the frozen reference outputs,
    importing minigpt, writing or changing any file (the graders, another
    run's report, a ``.pth`` in site-packages: nothing the exercises need),
    starting or signalling processes. An audit hook cannot be
    removed once added, so this holds whatever the learner's code does (the
    static checks of ``integrity.py`` report the attempt too). Grading
    solutions/ itself may read and import them.
    """
    def inside(path, roots) -> bool:  # realpath: '//x', /proc/self/root/x and symlinks name the same file
        return isinstance(path, (str, bytes, os.PathLike)) and bool(roots) and \
            os.path.realpath(os.fsdecode(path)).startswith(roots)

    def writes_a_file(path) -> bool:  # anywhere: a file outside the course (a .pth, ~/.bashrc) outlives the run
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)) != os.devnull

    def holds_project(path) -> bool:  # a folder at or above the project: its fd would reach it through dir_fd
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        real = os.path.realpath(os.fsdecode(path))
        return os.path.isdir(real) and (inside(real, (project,)) or project.startswith(real.rstrip("/") + "/"))

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if inside(path, off_limits):
                raise PermissionError(f"exercise code may not read {os.fsdecode(path)}: the answers are off limits")
            if holds_project(path):
                raise PermissionError(f"exercise code may not open the folder {os.fsdecode(path)}")
            if writing and writes_a_file(path):
                raise PermissionError(f"exercise code may not write {os.fsdecode(path)}: the exercises write no "
                                      f"files (return the value instead; print to see it)")
        elif event == "import" and str(args[0]) in PROCESS_MODULES:  # a fresh copy would bring fork_exec back
            raise PermissionError(f"exercise code may not start processes ({args[0]})")
        elif event == "import" and not allow_minigpt and str(args[0]).split(".")[0] in ("minigpt", "solutions"):
            raise ImportError(f"exercise code may not import {args[0]}: the course's answers are off limits")
        elif event == "import" and str(args[0]).split(".")[0] in GRADER_MODULES:
            raise ImportError(f"exercise code may not import {args[0]}: the grader's modules are off limits")
        elif event in FORBIDDEN_EVENTS:
            raise PermissionError(f"exercise code may not start or signal processes ({event})")
        elif event in CTYPES_EVENTS:
            raise PermissionError(f"exercise code may not call C functions through ctypes ({event})")
        elif event in WRITING_EVENTS and any(writes_a_file(a) for a in args[:2]):
            raise PermissionError(f"exercise code may not change files ({event} {args[0]!r})")
    return guard


def _decode(value):
    """Arguments as sent, with ``{"__generator__": seed}`` turned into a seeded torch.Generator."""
    if type(value) is dict:
        if set(value) == {"__generator__"}:
            return torch.Generator().manual_seed(value["__generator__"])
        return {k: _decode(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_decode(v) for v in value)
    return value


def _qualname(frame) -> str:
    code = frame.f_code
    return getattr(code, "co_qualname", code.co_name).replace(".<locals>", "")


def describe_exception(exc: BaseException) -> dict:
    """Type, message and where in the learner's files it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    tb, innermost, in_target = exc.__traceback__, None, None
    while tb is not None:
        innermost = tb
        if Path(tb.tb_frame.f_code.co_filename).parent == TARGET:
            in_target = tb
        tb = tb.tb_next
    info = {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc)[:2000], "function": None, "file": None, "line": None,
            "not_implemented": False, "frames": len(frames),
            "missing_module": getattr(exc, "name", None) if isinstance(exc, ImportError) else None}
    if in_target is not None:
        info.update(function=_qualname(in_target.tb_frame), file=Path(in_target.tb_frame.f_code.co_filename).name,
                    line=in_target.tb_lineno)
    info["origin"] = info["file"]  # the learner's file where it went wrong
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).parent == TARGET:
        info["origin"] = Path(exc.filename).name
    if isinstance(exc, NotImplementedError) and innermost is not None:
        file = Path(innermost.tb_frame.f_code.co_filename)
        if file.parent == TARGET and file.name.startswith("ex"):
            info.update(not_implemented=True, function=_qualname(innermost.tb_frame), file=file.name)
    return info


def handle(request: dict) -> dict:
    op = request["op"]
    torch.manual_seed(0)  # every request starts from the same global random state,
    random.seed(0)  # whatever ran before it in this worker
    module = load(request["module"])
    if op == "import":
        return {"ok": True, "value": None}
    args, kwargs = _decode(request.get("args", [])), _decode(request.get("kwargs", {}))
    names = frozenset().union(*(r.names for r in RULES if r.file == f"{request['module']}.py"))
    if op == "call":
        function = getattr(module, request["name"])
        value = watched(lambda: function(*args, **kwargs), names, TARGET, BY_HAND)
        return {"ok": True, "value": plain(value), "args_after": plain([args, kwargs])}
    if op == "probe":
        probe = getattr(GRADER_MODULE, request["name"])
        return {"ok": True, "value": plain(watched(lambda: probe(module, *args, **kwargs), names, TARGET, BY_HAND))}
    if op == "case":
        case = SNAPSHOT_CASES[request["module"]][request["name"]]
        return {"ok": True, "value": plain(watched(lambda: case(module, *args, **kwargs), names, TARGET, BY_HAND))}
    raise ValueError(f"unknown request {op!r}")


def hide_the_grader() -> None:
    """Take the grader's modules out of the learner's reach: ``exercises/`` off ``sys.path`` and every
    ``_grader`` module (and the loaded graders) out of ``sys.modules``. The objects the worker uses stay
    alive through its own references; an ``import _grader...`` in learner code now has to find the package
    again, which the audit hook refuses, and nothing on ``sys.path`` holds it."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (GRADER, PACKAGE)]
    for name in [n for n in sys.modules if n == "_grader" or n.startswith(("_grader.", "_grader_test_"))]:
        del sys.modules[name]


def _flush_printed() -> None:
    """What the learner's code printed reaches the log before the answer does (the grader shows it)."""
    for stream in (sys.__stdout__, sys.__stderr__, sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a stream the learner's code replaced or closed
            pass


def serve(target: Path, test_file: Path, in_fd: int, out_fd: int) -> None:
    """A worker's life: set up for one chapter of one target, then answer requests until EOF."""
    global TARGET, GRADER_MODULE
    TARGET = target.resolve()
    use_target(TARGET)  # exNN_* imports come from TARGET's files (read now); TARGET itself is never on sys.path
    GRADER_MODULE = _load_by_path(f"_grader_{test_file.stem}", test_file)
    held = sandbox.confine(needed=(str(GRADER),))
    hide_the_grader()
    # the answers, the frozen outputs, the grader, and the course package's source (run by path, it is an answer)
    off_limits = tuple(str(p) for p in (SOLUTIONS, SNAPSHOT_DIR, PACKAGE, GRADER.parent / "minigpt") if p != TARGET)
    _disarm_fork_exec()
    sys.addaudithook(_guard_against(off_limits, str(GRADER.parent), allow_minigpt=TARGET == SOLUTIONS))
    write_frame(out_fd, {"ready": True, "walls": held, "platform": sys.platform})
    while True:
        try:
            request = read_frame(in_fd)
        except EOFError:
            return
        BY_HAND.clear()
        try:
            answer = handle(request)
        except BaseException as exc:  # the learner's exception (SystemExit included) is data too
            answer = {"ok": False, "error": describe_exception(exc)}
        answer["by_hand"] = list(BY_HAND)
        _flush_printed()
        try:
            write_frame(out_fd, answer)
        except Exception as exc:  # e.g. a result that torch.save cannot write
            write_frame(out_fd, {"ok": False, "error": {"type": type(exc).__name__, "mro": [], "message": str(exc),
                                                        "function": None, "file": None, "line": None,
                                                        "not_implemented": False, "frames": 0,
                                                        "missing_module": None}})


def warm_up() -> None:
    """Pay once, in the zygote, for what the first call of a few torch features costs (seconds for AdamW).

    One thread per worker: the graders' tensors are tiny, and several threads per process on a busy
    2-core machine make a few training steps take seconds instead of a tenth of one.
    """
    torch.set_num_threads(1)
    for name in ("pytest", "_grader.learner", "_grader.oracles"):  # what the grader files import, loaded from the grader's folder
        importlib.import_module(name)
    for name in ("torch.utils._python_dispatch", "torch.utils._pytree"):  # for _cases.probe_on_another_device
        importlib.import_module(name)
    p = torch.nn.Parameter(torch.zeros(3))
    for optimizer in (torch.optim.AdamW([p], lr=0.1), torch.optim.SGD([p], lr=0.1)):
        p.sum().backward()
        optimizer.step()
    torch.nn.Linear(3, 3).to("meta")(torch.zeros(2, 3, device="meta"))


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this worker when the zygote ends (so no endless loop outlives a killed run)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the zygote ended before prctl took effect
        os._exit(0)


def zygote(control_fd: int) -> None:
    """Fork a worker for each request on the control socket; the workers are reaped automatically."""
    control = socket.socket(fileno=control_fd)
    warm_up()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control.sendall(b'{"ready": true}\n')
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 65536, 3)
        except OSError:
            return
        if not message:
            return
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                os.setsid()  # its own process group: killing the group stops anything it started
                _die_with(zygote_pid)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.dup2(fds[2], 1)
                os.dup2(fds[2], 2)
                serve(Path(request["target"]), Path(request["test_file"]), fds[0], fds[1])
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        control.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def spawned(target: Path, test_file: Path) -> None:
    """A worker started as a fresh interpreter (macOS, Windows, or ``MINIGPT_GRADER_START=spawn``).

    Frames travel over the pipes it was started with (its stdin and stdout); the learner's prints go to
    its log (stderr), so they can never be mistaken for a frame.
    """
    in_fd, out_fd = os.dup(0), os.dup(1)
    if sys.platform == "win32":  # frames are bytes: no newline translation on the pipes
        import msvcrt
        for fd in (in_fd, out_fd):
            msvcrt.setmode(fd, os.O_BINARY)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    if sys.platform.startswith("linux"):
        _die_with(os.getppid())  # the grading process ends: so does this worker
    warm_up()
    serve(target, test_file, in_fd, out_fd)


def main(argv: list[str]) -> None:
    """The entry point of the grader's worker interpreters (see ``client.BOOT``):
    ``zygote CONTROL_FD`` (fork start) or ``serve TARGET TEST_FILE`` (spawn start)."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    if argv[0] == "zygote":
        zygote(int(argv[1]))
    elif argv[0] == "serve":
        spawned(Path(argv[1]), Path(argv[2]))
    else:
        raise SystemExit(f"unknown worker command {argv!r}")
