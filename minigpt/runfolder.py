"""The run folder (`minigpt train --out`): a run never destroys another run's work.

Four guards, checked before any training:
- `check_out_folder`: the folder is a folder (or can be made one) that we may write into, so a bad
  `--out` fails at once, not after an hour of training at the first save.
- `existing_run`: the checkpoints a folder already holds, so the command can refuse to write over a
  finished run unless told to (`--resume` or `--overwrite`).
- `RunLock`: a lock file holding the process id of the run that writes into the folder. A second
  run on the same folder is refused while the first is alive; the lock of a run that died without
  releasing it (killed, power cut) is taken over. Process ids are checked on POSIX systems only;
  elsewhere a leftover lock must be deleted by hand (the message says which file).
- `remove_stale_temp_files`: the temporary files of saves that a kill cut short.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from minigpt.checkpoint import TEMP_NAME
from minigpt.errors import MinigptError

LOCK_NAME = ".minigpt.lock"
CHECKPOINT_NAMES = ("ckpt.pt", "best.pt")


class FolderInUse(MinigptError):
    """Another live run holds the folder's lock."""


def check_out_folder(folder: str | Path) -> None:
    """Refuse an --out that is a file, lies under a file, sits where we may not write, or holds a
    folder where the lock file goes."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MinigptError(f"--out {str(folder)!r} is a file, not a folder; give a folder for the "
                         f"checkpoints")
    existing = folder
    while not existing.exists():  # the nearest folder that is there: we would create the rest in it
        existing = existing.parent
    if not existing.is_dir():
        raise MinigptError(f"--out {str(folder)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MinigptError(f"--out {str(folder)!r} is not writable: no permission to write in "
                         f"{str(existing)!r}")
    if (folder / LOCK_NAME).is_dir():  # not ours, and no lock file could be made there
        raise MinigptError(f"--out {str(folder)!r} holds a folder named {LOCK_NAME!r}, where minigpt "
                         f"keeps its lock file; move it away or choose another --out")


def existing_run(folder: str | Path) -> list[str]:
    """The names of the checkpoints already in `folder` (empty when there is no run there)."""
    folder = Path(folder)
    return [name for name in CHECKPOINT_NAMES if (folder / name).exists()]


def check_run_folder(out: Path, resume: Path | None, overwrite: bool) -> list[str]:
    """Refuse an --out we cannot write, or one holding another run; returns what --overwrite
    replaces (never the checkpoint resumed from).

    A resume from the folder's own latest checkpoint writes over it: that is what it is for.
    Resuming from best.pt beside a later ckpt.pt is not: it would replace the later work.
    """
    check_out_folder(out)
    found = [name for name in existing_run(out)
             if resume is None or (out / name).resolve() != resume.resolve()]
    continues = (resume is not None and out.resolve() == resume.parent.resolve()
                 and "ckpt.pt" not in found)
    if found and not overwrite and not continues:
        raise MinigptError(f"--out {str(out)!r} already holds a run ({', '.join(found)}); "
                           f"continue it with --resume {str(out / found[0])!r}, replace it with "
                           f"--overwrite, or choose another --out")
    return found if overwrite and not continues else []


def remove_stale_temp_files(folder: str | Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporary files that interrupted saves (a kill mid-save) left in `folder`.

    Only plain files named the way `save_checkpoint` names its temporary files are removed, and only
    directly in `folder`; with `names` (e.g. ckpt.pt, best.pt), only those of saves to these names,
    so a folder shared with other files loses nothing that merely looks alike. Call it at the start
    of a run, while no other process saves there (a temp file of a save in progress would be taken
    away from it). Returns the paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = TEMP_NAME.fullmatch(entry.name)
        ours = match is not None and (names is None or match["target"] in names)
        if ours and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _owner_line() -> str:
    return f"{os.getpid()} {socket.gethostname()}"


def _read_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) from a lock file; None when it is gone or does not hold one."""
    try:
        pid, host = path.read_text(encoding="utf-8").split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_alive(pid: int, host: str) -> bool:
    """Whether the run that wrote a lock still runs; when we cannot tell, assume it does."""
    if host != socket.gethostname() or os.name != "posix":
        return True  # another machine (a shared disk), or no cheap way to ask: be safe
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return True


def check_not_in_use(folder: str | Path) -> None:
    """Refuse `folder` if a live run holds its lock. Only a look: the run takes the lock itself
    (`minigpt train --nproc` looks before starting the ranks, whose rank 0 then takes it)."""
    path = Path(folder) / LOCK_NAME
    owner = _read_owner(path)
    if owner is not None and _is_alive(*owner):
        raise _in_use(path, *owner)


def _in_use(lock: Path, pid: int, host: str) -> FolderInUse:
    return FolderInUse(f"--out {str(lock.parent)!r} is in use by another minigpt run (process "
                       f"{pid} on {host}); wait for it to end or choose another --out (if no run "
                       f"is alive, delete {str(lock)!r})")


class RunLock:
    """Hold `folder`'s lock for as long as the `with` block runs (or until `release`).

    `taken_over` says whose leftover lock was replaced (a dead run's, or an unreadable one), else None.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self.taken_over: str | None = None
        self.held = False
        self.created: list[Path] = []  # folders made for the lock, removed again if left empty

    def acquire(self) -> "RunLock":
        folder = self.path.parent
        while not folder.exists():
            self.created.append(folder)
            folder = folder.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MinigptError(f"--out {str(self.path.parent)!r} cannot be created "
                               f"({error.strerror})") from None
        for _ in range(2):  # the second try follows the removal of a dead run's lock
            if self._create():
                self.held = True
                return self
            owner = _read_owner(self.path)
            if owner is not None and _is_alive(*owner):
                raise _in_use(self.path, *owner)
            if owner is not None:
                self.taken_over = f"left by run {owner[0]}, which is no longer running"
            elif self.path.exists():  # not a lock we wrote: empty or garbled
                self.taken_over = "whose lock file could not be read"
            self.path.unlink(missing_ok=True)
        raise FolderInUse(f"--out {str(self.path.parent)!r}: another run took its lock at the same "
                          f"moment; choose another --out")

    def _create(self) -> bool:
        """Create the lock file holding our process id, unless it already exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_owner_line() + "\n")
        return True

    def release(self) -> None:
        """Remove the lock file, if it is still ours, and the folders made for it, if still empty."""
        if self.held and _read_owner(self.path) == (os.getpid(), socket.gethostname()):
            self.path.unlink(missing_ok=True)
        self.held = False
        for folder in self.created:  # innermost first
            try:
                folder.rmdir()  # only succeeds on an empty folder: a run that failed early
            except OSError:
                break
        self.created = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
