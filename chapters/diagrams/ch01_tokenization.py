"""Diagrams of chapter 1: the text -> ids -> text round trip, and one step of byte-pair encoding.

Drawn with the boxes, arrows and cells of ``_draw.py`` only, so ``make_diagrams.py`` can regenerate them.
"""

from __future__ import annotations

from _draw import BLUE, GREEN, ORANGE, arrow, box, cells, new_diagram

LINE = "To be"
IDS = [31, 52, 1, 39, 42]  # LINE in the Shakespeare character vocabulary, as the notebook prints it
CELL = 0.6


def shown(ch: str) -> str:
    """A character as a cell shows it: a space as an open box, so it can be seen."""
    return "␣" if ch == " " else ch


def round_trip_figure():
    """Text to ids with stoi (encode), ids back to text with itos (decode)."""
    fig, ax = new_diagram(10.8, 2.9)
    left_text, left_ids, right_text = 0.3, 3.9, 7.5
    y = 1.0
    ax.text(left_text, 2.5, "text", fontsize=11, weight="bold")
    ax.text(left_ids, 2.5, "ids", fontsize=11, weight="bold")
    ax.text(right_text, 2.5, "text again", fontsize=11, weight="bold")
    text_cells = cells(ax, left_text, y, [shown(ch) for ch in LINE], size=CELL, colors=BLUE)
    id_cells = cells(ax, left_ids, y, [str(i) for i in IDS], size=CELL, colors=ORANGE)
    back_cells = cells(ax, right_text, y, [shown(ch) for ch in LINE], size=CELL, colors=BLUE)
    arrow(ax, (text_cells[-1].right[0] + 0.1, y + CELL / 2), (id_cells[0].left[0] - 0.1, y + CELL / 2))
    arrow(ax, (id_cells[-1].right[0] + 0.1, y + CELL / 2), (back_cells[0].left[0] - 0.1, y + CELL / 2))
    for start, name in ((text_cells[-1], "encode\n(stoi)"), (id_cells[-1], "decode\n(itos)")):
        ax.text(start.right[0] + 0.55, y + CELL + 0.25, name, ha="center", fontsize=10)
    ax.text(0.3, 0.35, "stoi['T'] = 31, stoi['o'] = 52, ...;  itos[31] = 'T', ...;   "
                       "decode(encode(text)) == text, exactly", fontsize=9.5, color="#444444")
    return fig


TOY = "the cat sat"  # build_vocab: ' '=0, a=1, c=2, e=3, h=4, s=5, t=6; the merge makes 7


def bpe_merge_figure():
    """One BPE step on 'the cat sat': count the neighbouring pairs, merge the most frequent into a new id."""
    vocab = {ch: i for i, ch in enumerate(sorted(set(TOY)))}
    ids = [vocab[ch] for ch in TOY]
    pair, new_id = (vocab["a"], vocab["t"]), len(vocab)
    fig, ax = new_diagram(9.6, 4.0)
    left, top, bottom = 1.6, 2.6, 0.7
    ax.text(0.15, top + CELL / 2, "before", va="center", fontsize=11, weight="bold")
    hits = [i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair]
    in_pair = {j for i in hits for j in (i, i + 1)}
    colors = [ORANGE if i in in_pair else BLUE for i in range(len(ids))]
    before = cells(ax, left, top, [str(i) for i in ids], size=CELL, colors=colors)
    for cell, ch in zip(before, TOY):
        ax.text(cell.center[0], top - 0.2, shown(ch), ha="center", fontsize=9, color="#555555")
    after_ids, after_text, i = [], [], 0
    while i < len(ids):
        if i in hits:
            after_ids.append(new_id)
            after_text.append("at")
            i += 2
        else:
            after_ids.append(ids[i])
            after_text.append(shown(TOY[i]))
            i += 1
    ax.text(0.15, bottom + CELL / 2, "after", va="center", fontsize=11, weight="bold")
    colors = [GREEN if i == new_id else BLUE for i in after_ids]
    after = cells(ax, left, bottom, [str(i) for i in after_ids], size=CELL, colors=colors)
    for cell, piece in zip(after, after_text):
        ax.text(cell.center[0], bottom - 0.2, piece, ha="center", fontsize=9, color="#555555")
    for i in hits:
        arrow(ax, (before[i].right[0], top - 0.3), after[_after_index(hits, i)].top,
              color="#888888")
    note = box(ax, 7.25, 0.3, 2.25, 1.35, "", color="#ffffff")
    ax.text(note.x + 0.1, note.y + note.h - 0.15, f"most_frequent_pair\n  -> {pair}  ('a', 't')\n"
            f"   seen {len(hits)} times\nmerge(ids, {pair}, {new_id})", va="top", fontsize=9, family="monospace")
    ax.text(0.15, 3.65, f"One BPE step: {len(ids)} tokens -> {len(after_ids)} tokens, vocabulary {len(vocab)} "
                        f"-> {len(vocab) + 1} ids", fontsize=11)
    return fig


def _after_index(hits: list[int], i: int) -> int:
    """Where the pair starting at position i lands after the merge (one cell less per earlier hit)."""
    return i - sum(1 for h in hits if h < i)


def figures():
    return {"ch01_round_trip.png": round_trip_figure(), "ch01_bpe_merge.png": bpe_merge_figure()}
