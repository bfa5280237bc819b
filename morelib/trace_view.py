"""What the notebooks show of a traced fact (:mod:`morelib.trace`): the fact itself, its rows in
the files other stages wrote (the expert's reply, the difficulty split, the GRPO mix), and two
texts side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from morelib.layout import RunLayout


def load_samples(data_dir: str | Path, ids: Sequence[str]) -> dict:
    """``{id: Sample}`` for ``ids`` (``{split}-{line}``), each read from its split."""
    from morelib.data import load_split

    wanted = set(ids)
    found = {s.id: s for split in sorted({i.rpartition("-")[0] for i in ids})
             for s in load_split(data_dir, split) if s.id in wanted}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"{data_dir}: no facts {missing} (is the trace from another dataset?)")
    return found


def describe(sample, facts: Mapping | None = None) -> str:
    """A fact as text: the headline with the entity in [[ ]], the object, the gold label, and (toy) how
    the object looks and whether it is the headline's subject."""
    start, end = sample.entity_span
    marked = " ".join(sample.tokens[:start] + ("[[",) + sample.tokens[start:end] + ("]]",) + sample.tokens[end:])
    lines = [f"{sample.id}: {marked}", f"  entity {sample.entity!r}, object {sample.object_name}, gold {sample.label}"]
    if facts:
        obj = facts["object"]
        lines.append(f"  toy facts: the object is a {obj['style']} {obj['colour']} {obj['shape']} "
                     f"({obj['type']}, the headline's {obj['role']}); the entity is a {facts['entity_type']}; "
                     f"cue words {facts['cue_words']!r}")
    return "\n".join(lines)


def expert_reply(run_dir: str | Path, sample_id: str, model: str | None = None) -> dict | None:
    """The expert's stored reply for one fact (the record notebook 02 filters), or None."""
    from morelib.expert_store import ResponseStore, latest_records

    return latest_records(ResponseStore.for_run(run_dir), [sample_id], model).get(sample_id)


def difficulty_row(run_dir: str | Path, sample_id: str) -> dict | None:
    """The fact's row of the difficulty split (``id, label, pred, difficulty``), or None."""
    from morelib.difficulty import read_split

    path = RunLayout(run_dir).difficulty_split
    if not path.is_file():
        return None
    return next((row for row in read_split(path) if row["id"] == sample_id), None)


def mix_epochs(mix: Sequence[Sequence[str]], sample_id: str) -> list[int]:
    """The mix epochs (1-based) whose rows hold ``sample_id``."""
    return [epoch for epoch, ids in enumerate(mix, start=1) if sample_id in ids]



def side_by_side(left_title: str, left: str, right_title: str, right: str):
    """Two texts in two columns (an IPython HTML object; plain text where HTML is not shown)."""
    import html

    from IPython.display import HTML

    cell = ('<td style="vertical-align:top;width:50%"><b>{}</b><pre style="white-space:pre-wrap;'
            'font-size:11px">{}</pre></td>')
    body = cell.format(html.escape(left_title), html.escape(left)) + cell.format(html.escape(right_title),
                                                                                   html.escape(right))

    class _Pair(HTML):
        def __repr__(self) -> str:
            return f"{left_title}\n{left}\n\n{right_title}\n{right}"

    return _Pair(f'<table style="width:100%"><tr>{body}</tr></table>')
