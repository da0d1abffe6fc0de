"""The worker: the only process that runs a learner's code.

Started by ``_client.py`` as ``python -I _worker.py TARGET GRADER IN_FD OUT_FD``
(a fresh interpreter that ignores PYTHONPATH and the user's site folder).
It imports the learner's ``exNN_<topic>.py`` from TARGET only, then answers
requests one at a time:

- ``call``: run one learner function on the given arguments and send back its
  result and the arguments as they are after the call (to spot changes made in
  place);
- ``probe``: run a grader-owned probe, a ``probe_*`` function of the chapter's
  grader file, which drives the learner's classes (builds a model, trains it a
  few steps, ...) and returns plain data;
- ``case``: run a seeded snapshot case of ``_cases.py``.

Whatever the learner's code does here (patch torch, rewrite the graders,
exit, loop forever) changes only what this worker sends back; the pytest
process decides, and kills this process at the time limit.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import traceback
from pathlib import Path

TARGET, GRADER = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
IN_FD, OUT_FD = int(sys.argv[3]), int(sys.argv[4])
TEST_FILE = Path(sys.argv[5]).resolve()
sys.path[:0] = [str(TARGET), str(GRADER)]

import torch  # noqa: E402

from _protocol import plain, read_frame, write_frame  # noqa: E402
from _target import load, use_target  # noqa: E402

use_target(TARGET)


def _load_by_path(name: str, file: Path):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRADER_MODULE = _load_by_path(f"_grader_{TEST_FILE.stem}", TEST_FILE)
from _cases import SNAPSHOT_CASES  # noqa: E402


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
    if op == "call":
        value = getattr(module, request["name"])(*args, **kwargs)
        return {"ok": True, "value": plain(value), "args_after": plain([args, kwargs])}
    if op == "probe":
        probe = getattr(GRADER_MODULE, request["name"])
        return {"ok": True, "value": plain(probe(module, *args, **kwargs))}
    if op == "case":
        case = SNAPSHOT_CASES[request["module"]][request["name"]]
        return {"ok": True, "value": plain(case(module, *args, **kwargs))}
    raise ValueError(f"unknown request {op!r}")


def main() -> None:
    write_frame(OUT_FD, {"ready": True})
    while True:
        try:
            request = read_frame(IN_FD)
        except EOFError:
            return
        try:
            answer = handle(request)
        except BaseException as exc:  # the learner's exception (SystemExit included) is data too
            answer = {"ok": False, "error": describe_exception(exc)}
        try:
            write_frame(OUT_FD, answer)
        except Exception as exc:  # e.g. a result that torch.save cannot write
            write_frame(OUT_FD, {"ok": False, "error": {"type": type(exc).__name__, "mro": [], "message": str(exc),
                                                        "function": None, "file": None, "line": None,
                                                        "not_implemented": False, "frames": 0,
                                                        "missing_module": None}})


if __name__ == "__main__":
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    main()
