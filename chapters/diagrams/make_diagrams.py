"""Draw the course's diagrams from code and save them where the notebooks show them.

Every ``chapters/diagrams/chNN_<topic>.py`` defines ``figures()``, which
returns ``{"chNN_<name>.png": figure, ...}`` (matplotlib only). This script
imports each module, calls ``figures()`` and saves every figure as
``chapters/figures/<name>`` (PNG, dpi 110, no timestamp or version in the
file, so the same matplotlib draws the same bytes). A notebook shows one with
``![what it shows](figures/chNN_<name>.png)``.

    python chapters/diagrams/make_diagrams.py           # draw them all
    python chapters/diagrams/make_diagrams.py ch03      # only chapter 3's
    python chapters/diagrams/make_diagrams.py --check   # write nothing; exit 1 on a problem

``--check`` draws every figure into a temporary folder and fails when a
notebook shows a figure that no module draws, a drawn figure is not committed
in ``chapters/figures/``, a committed figure has no module drawing it, or a
committed figure's size in pixels differs from the drawn one. It does not
compare pixels: other matplotlib or FreeType versions render text a little
differently.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

HERE = Path(__file__).resolve().parent
CHAPTERS = HERE.parent
DPI = 110
MODULE = re.compile(r"(ch\d\d)_\w+\.py")
FIGURE_NAME = re.compile(r"ch\d\d_[\w-]+\.png")
REFERENCE = re.compile(r"figures/([\w.-]+\.png)")


def modules(diagrams: Path, selectors: list[str] = ()) -> list[Path]:
    """The ``chNN_*.py`` files in ``diagrams``, only those of the chapters named (``ch03``) if any."""
    found = sorted(p for p in diagrams.glob("ch[0-9][0-9]_*.py") if MODULE.fullmatch(p.name))
    if not selectors:
        return found
    chosen = [p for p in found if p.name[:4] in selectors or p.name in selectors or p.stem in selectors]
    if not chosen:
        raise SystemExit(f"make_diagrams.py: no module matches {' '.join(selectors)} "
                         f"(modules: {', '.join(p.name for p in found) or 'none'})")
    return chosen


def draw(module: Path) -> dict[str, Figure]:
    """Import one chapter's module and call its ``figures()``, checking what comes back."""
    sys.path.insert(0, str(module.parent))  # so modules can `from _draw import box`
    try:
        spec = importlib.util.spec_from_file_location(f"diagrams_{module.stem}", module)
        namespace = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(namespace)
    finally:
        sys.path.remove(str(module.parent))
    if not callable(getattr(namespace, "figures", None)):
        raise SystemExit(f"make_diagrams.py: {module.name} defines no figures() function")
    drawn = namespace.figures()
    if not isinstance(drawn, dict):
        raise SystemExit(f"make_diagrams.py: {module.name}: figures() must return a dict "
                         f"{{'chNN_<name>.png': figure}}, got {type(drawn).__name__}")
    prefix = module.name[:5]
    for name, fig in drawn.items():
        if not (isinstance(name, str) and FIGURE_NAME.fullmatch(name) and name.startswith(prefix)):
            raise SystemExit(f"make_diagrams.py: {module.name}: figure name {name!r} must look like "
                             f"'{prefix}<name>.png' (letters, digits, _ and -)")
        if not isinstance(fig, Figure):
            raise SystemExit(f"make_diagrams.py: {module.name}: {name} is a {type(fig).__name__}, "
                             f"not a matplotlib Figure")
    return drawn


def save_all(sources: list[Path], out: Path) -> dict[str, Path]:
    """Draw every module's figures into ``out``; returns {figure name: module that drew it}."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for module in sources:
        for name, fig in draw(module).items():
            if name in made:
                raise SystemExit(f"make_diagrams.py: {name} is drawn by both {made[name].name} and {module.name}")
            made[name] = module
            target = out / name
            with tempfile.TemporaryDirectory() as scratch:
                fresh = Path(scratch) / name
                fig.savefig(fresh, dpi=DPI, format="png", metadata={"Software": None})
                data = fresh.read_bytes()
            plt.close(fig)
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
    return made


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG header."""
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def committed_figures(figures: Path) -> set[str]:
    """Names of the PNG files git tracks in ``figures`` (the files there, outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=figures, capture_output=True,
                                text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {p.name for p in figures.glob("*.png")}
    return {name for name in listed.split("\0") if name.endswith(".png") and "/" not in name}


def referenced_figures(chapters: Path) -> dict[str, list[str]]:
    """{figure name: ['NN_x.ipynb cell K', ...]} for every ``figures/<name>.png`` in a markdown cell."""
    where: dict[str, list[str]] = {}
    for notebook in sorted(chapters.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] != "markdown":
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for name in REFERENCE.findall(source):
                where.setdefault(name, []).append(f"{notebook.name} cell {index}")
    return where


def check(chapters: Path, diagrams: Path) -> list[str]:
    """Every problem --check reports, as sentences saying what to fix."""
    figures = chapters / "figures"
    with tempfile.TemporaryDirectory() as scratch:
        made = save_all(modules(diagrams), Path(scratch))
        sizes = {name: png_size(Path(scratch) / name) for name in made}
    on_disk = {p.name for p in figures.glob("*.png")} if figures.is_dir() else set()
    committed = committed_figures(figures) if figures.is_dir() else set()
    problems = []
    for name, places in sorted(referenced_figures(chapters).items()):
        if name not in made:
            problems.append(f"{', '.join(places)} shows figures/{name}, which no chapters/diagrams/chNN_*.py "
                            f"draws: add it to that chapter's figures() or fix the name")
    for name, module in sorted(made.items()):
        if name not in on_disk:
            problems.append(f"{module.name} draws {name}, missing from chapters/figures/: run "
                            f"python chapters/diagrams/make_diagrams.py and commit it")
        elif name not in committed:
            problems.append(f"chapters/figures/{name} (drawn by {module.name}) is not committed: git add it")
        elif png_size(figures / name) != sizes[name]:
            problems.append(f"chapters/figures/{name} is {png_size(figures / name)} pixels, {module.name} now "
                            f"draws {sizes[name]}: run python chapters/diagrams/make_diagrams.py and commit it")
    for name in sorted((on_disk | committed) - set(made)):
        problems.append(f"chapters/figures/{name} is drawn by no chapters/diagrams/chNN_*.py: add its code "
                        f"there or delete the file")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chNN or a module name (default: every module)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if figures, modules and notebooks disagree")
    parser.add_argument("--root", type=Path, default=CHAPTERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    diagrams = args.root / "diagrams"
    if args.check:
        if args.chapters:
            parser.error("--check checks every chapter; give no chapter with it")
        problems = check(args.root, diagrams)
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    made = save_all(modules(diagrams, args.chapters), args.root / "figures")
    for name, module in made.items():
        print(f"chapters/figures/{name}  (from {module.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
