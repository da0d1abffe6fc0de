"""Data-parallel training on PyTorch's own engine: which process this is, how the ranks agree.

`torchrun --standalone --nproc_per_node W -m minigpt train ...` starts W copies of the command
(the ranks 0 .. W-1) and puts RANK, WORLD_SIZE and a rendezvous address in each one's environment;
`join_from_env` joins them into one process group: gloo on CPUs, nccl between NVIDIA GPUs, with a
timeout of seconds on every collective, so that a rank that stops answering makes the others stop
with a message instead of waiting gloo's default of 30 minutes. `minigpt train --nproc W` starts
torchrun for the user (`launch`).

The rules of a data-parallel run (`minigpt.trainer` follows them):

- every rank holds the whole model; DistributedDataParallel averages the gradients in backward();
- the grad_accum_steps micro-batches of a step are shared out, rank r running r, r + W, r + 2W, ...
  (`micro_steps_of_rank`); micro-batch i of step s is the same rows whoever runs it, so a run's
  data and result do not depend on W, and a run stopped on two ranks resumes on one;
- only rank 0 writes: the run folder's lock, the log, checkpoints (`is_main_process`); every rank
  runs the same evaluations, so that none waits long for rank 0 (only for its saves);
- once per step the ranks sum their losses (`sum_over_ranks`) and share their wish to stop
  (`max_over_ranks`), so all of them see the same loss and stop after the same step.
"""

from __future__ import annotations

import datetime
import math
import os
import signal
import subprocess
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist

from minigpt.config import ConfigError
from minigpt.errors import MinigptError


class RankLost(MinigptError):
    """Another rank died, or stopped answering past the timeout: this one stops too."""


class SaidByRankZero(MinigptError):
    """A problem rank 0 found and reports: the other ranks stop without repeating it."""


def is_distributed() -> bool:
    """Whether this process is one rank of a process group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when alone)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many ranks share the run (1 when alone)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True alone, and on rank 0 of a group: the one process that writes files and logs."""
    return rank() == 0


def started_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) made this process one of several ranks."""
    return launched_world_size() > 1


def launched_world_size() -> int:
    """The number of ranks the launcher's environment (WORLD_SIZE, RANK) says; 1 without one."""
    world = _whole_number("WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"), 1)
    if world > 1 and "RANK" in os.environ:
        _whole_number("RANK", os.environ["RANK"], 0, world - 1)
        return world
    return 1


def _whole_number(name: str, text: str, low: int, high: int | None = None) -> int:
    """An environment variable's whole number, or an error naming it (a stray or garbled one)."""
    allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        raise MinigptError(f"the environment variable {name} must be a whole number {allowed} "
                           f"(torchrun sets it), got {text!r}; unset it to train in one process")
    return value


def join_from_env(device: torch.device, timeout_s: float) -> torch.device:
    """Join the process group the launcher's environment describes; the device this rank uses.

    gloo for the CPU, nccl for CUDA (each rank on GPU LOCAL_RANK). Every collective waits at most
    `timeout_s` seconds for the other ranks.
    """
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError("device", f"cpu or cuda for a run on several ranks (torch.distributed "
                          f"has no backend for {device.type})", device.type)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise MinigptError(f"RANK and WORLD_SIZE are set but not {' and '.join(missing)}: start the "
                           f"ranks with torchrun (or minigpt train --nproc), or unset WORLD_SIZE to "
                           f"train in one process")
    if sys.platform == "linux":  # torchrun killed outright: this rank stops (and saves) anyway
        _term_when_parent_dies()
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (dist.DistError, RuntimeError, ValueError) as error:
        raise RankLost(f"rank {os.environ['RANK']} could not join the other ranks at "
                       f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within "
                       f"{timeout_s:g} s ({str(error).splitlines()[0][:200]})") from None
    return device


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def micro_steps_of_rank(grad_accum_steps: int, rank: int, world_size: int) -> list[int]:
    """The micro-batches of a step that `rank` runs: every world_size-th one, from its own rank."""
    check_world_size(grad_accum_steps, world_size)
    return list(range(rank, grad_accum_steps, world_size))


def check_world_size(grad_accum_steps: int, world_size: int) -> None:
    """Refuse a step that the ranks cannot share equally (each must make the same collectives)."""
    if grad_accum_steps % world_size:
        raise ConfigError("grad_accum_steps", f"a multiple of the number of ranks ({world_size}), "
                          f"so that every rank runs as many micro-batches", grad_accum_steps)


def sum_over_ranks(values: Sequence[float | torch.Tensor], device: torch.device) -> list[float]:
    """The sum of `values` over all ranks, in one collective (alone: the values themselves)."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def max_over_ranks(values: Sequence[float | torch.Tensor], device: torch.device) -> list[float]:
    """The largest of each of `values` over all ranks, in one collective."""
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def _all_reduce(values: Sequence[float | torch.Tensor], device: torch.device, op) -> list[float]:
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).detach()
                          for v in values])  # (len(values),)
    if is_distributed():
        dist.all_reduce(packed, op=op)
    return packed.tolist()


def share(value: Any) -> Any:
    """Rank 0's `value`, on every rank (a Python object, pickled; alone: `value` itself)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, argv: Sequence[str], stop_within_s: float = 300.0) -> int:
    """Run `minigpt <argv>` on `nproc` ranks under torchrun; its exit status.

    The cores are split between the ranks (OMP_NUM_THREADS, unless set). torchrun runs in a
    session of its own, so that a Ctrl-C reaches it once, from here; it passes the signal to the
    ranks, which stop together after a step and save, and it gives them `stop_within_s` seconds to
    do so (its own default is 30). A hang-up or quit is passed on as SIGTERM, and on Linux torchrun
    gets SIGTERM too if this process is killed outright, so no rank trains on unseen.
    """
    threads = max(1, _usable_cores() // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
           "MINIGPT_LAUNCHER_PID": str(os.getpid()),
           # read by recent torchruns (2.13 here); older ones kill the ranks after 30 s
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT",
                                                            str(math.ceil(stop_within_s)))}
    command = [sys.executable, "-c", _TORCHRUN, "--standalone", f"--nproc_per_node={nproc}",
               "-m", "minigpt", *argv]
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum, frame):
        received.append(signum)
        if child is not None and os.name != "nt":  # Windows: the console's Ctrl-C reached it
            child.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    stops = [signal.SIGINT, signal.SIGTERM] + [getattr(signal, name) for name in ("SIGHUP", "SIGQUIT")
                                               if hasattr(signal, name)]
    previous = {s: signal.signal(s, forward) for s in stops}  # before torchrun starts: none is lost
    try:
        child = subprocess.Popen(command, env=env, start_new_session=os.name != "nt")
        if received:  # a signal came while it started
            forward(received.pop(), None)
        status = child.wait()
        if received:  # stopped by a signal here: say which
            return 128 + received[0]
        return 128 - status if status < 0 else status  # -N: torchrun was killed by signal N
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# torchrun itself, run by `launch` through `torchrun_quietly`
_TORCHRUN = ("import sys; from minigpt.distributed import torchrun_quietly; "
             "sys.exit(torchrun_quietly(sys.argv[1:]))")


def torchrun_quietly(args: Sequence[str]) -> int:
    """torchrun (`python -m torch.distributed.run ARGS`), its exit status; a stop by a signal, or a
    rank that failed, ends with one line instead of torchrun's tracebacks (the ranks have said
    what happened: a minigpt error, or the step they stopped after and the checkpoint)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main
    if sys.platform == "linux":
        _term_when_parent_dies(int(os.environ.get("MINIGPT_LAUNCHER_PID", "0")))
    try:
        main(list(args))
    except (SignalException, KeyboardInterrupt) as stop:
        signum = int(getattr(stop, "sigval", signal.SIGINT))
        print(f"minigpt: the ranks were stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except ChildFailedError as failed:
        return _say_why_ranks_failed({rank: f.exitcode for rank, f in failed.failures.items()})
    return 0


def _say_why_ranks_failed(exitcodes: dict[int, int]) -> int:
    """One line for the failed ranks (rank -> exit code, -N: killed by signal N); the status to
    exit with. The cause is the rank that failed on its own, not one stopped afterwards (by
    torchrun's SIGTERM, or by a minigpt error, 2, saying that another rank was lost)."""
    stopped = {-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT}
    causes = {r: code for r, code in exitcodes.items() if code not in stopped | {2}}
    if not causes:
        if any(code == 2 for code in exitcodes.values()):
            return 2  # a minigpt error, which the ranks printed
        code = next(iter(exitcodes.values()))  # every rank stopped on a signal
        signum = -code if code < 0 else code - 128
        print(f"minigpt: the ranks were stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    rank, code = min(causes.items())
    what = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
            else f"exited with status {code}")
    print(f"minigpt: rank {rank} {what}; torchrun stopped the others", file=sys.stderr)
    return 128 - code if code < 0 else code


def _usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _term_when_parent_dies(parent_pid: int = 0) -> None:
    """SIGTERM to this process when its parent dies (Linux): torchrun's when `launch` dies, a
    rank's when torchrun does, so that no process trains on unseen. `parent_pid`: the parent
    expected; if it is already gone (it died before this call), stop now."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM)) != 0:
        return  # not allowed here: the other guards (timeouts, torchrun) remain
    if parent_pid and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)
