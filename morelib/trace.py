"""The traced samples: two facts of the training set that every notebook follows.

No single fact can show every stage. The expert writes reasoning only for the Stage 1 quarter
(notebooks 01-03), while the easy/hard split and GRPO see only the other three quarters, the
Stage 2 pool (04-05). So the trace holds two ids:

* ``stage1_id``: a fact with a relation (not ``none``) in the Stage 1 quarter: its expert prompt,
  the expert's reply, the filter's verdict, and what Stage 1 learned from it;
* ``pool_id``: a fact of the Stage 2 pool: the Stage 1 model's answer, easy or hard, one GRPO group
  of completions with their rewards and advantages, and every model's final answer.

Where it can, the pool fact comes from the **same image and headline** as the Stage 1 fact (MORE
gives one fact per object and entity of a pair), so the reader follows one picture from the
expert's worked example to the student's own answers. Notebook 00 chooses the pair
(:func:`choose`, deterministic) and writes it to ``RunLayout.trace``; the other notebooks read it
with :func:`load`. The ``trace_id`` setting pins one of the two. What the notebooks show of
the two facts (their rows in other stages' files) is :mod:`morelib.trace_view`; one GRPO group
of the pool fact, scored, is :mod:`morelib.grpo_group`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from morelib.files import FileFormatError, read_json, write_json
from morelib.labels import NONE
from morelib.layout import RunLayout

ROLES = ("stage1_id", "pool_id")


@dataclass(frozen=True)
class Trace:
    """The two traced facts and how they were chosen."""

    stage1_id: str
    pool_id: str
    how: str  # one sentence: the rule or the setting that chose them

    @property
    def ids(self) -> list[str]:
        return [self.stage1_id, self.pool_id]


def id_key(sample_id: str) -> tuple[str, int]:
    """``"train-12"`` -> ``("train", 12)``: ids in data order (``train-2`` before ``train-10``)."""
    split, _, line = sample_id.rpartition("-")
    return (split, int(line)) if line.isdigit() else (sample_id, -1)


def pair_key(sample) -> tuple[str, str]:
    """The image-text pair a fact belongs to (MORE has one fact per object and entity of a pair)."""
    return sample.img_id, sample.text


def _first(ids) -> str | None:
    return min(ids, key=id_key) if ids else None


def _best_sibling(anchor, siblings: Sequence) -> str | None:
    """The sibling to follow: a relation first, then the anchor's entity, then data order."""
    if not siblings:
        return None
    ranked = sorted(siblings, key=lambda s: (s.label == NONE, s.entity != anchor.entity, id_key(s.id)))
    return ranked[0].id


def _other(sibling: str | None, part: str) -> str:
    if sibling:
        return f"the {part} fact comes from the same image and headline"
    return f"no {part} fact shares its image and headline, so the first {part} fact with a relation"


def choose(samples: Sequence, stage1_ids: Sequence[str], pool_ids: Sequence[str],
           trace_id: str | None = None) -> Trace:
    """The traced pair, chosen deterministically from the training ``samples``.

    Without ``trace_id``: the Stage 1 fact is the first relation fact (data order) of the Stage 1
    quarter whose image-text pair also has a fact in the pool, preferring pairs whose pool fact is
    a relation too; the pool fact is that sibling. When no pair is shared, each is the first
    relation fact of its part. With ``trace_id``: that fact takes the role of the part it is in,
    and the other role goes to its best sibling (or the first relation fact of the other part).
    """
    by_id = {s.id: s for s in samples}
    stage1, pool = set(stage1_ids), set(pool_ids)
    if not stage1 or not pool:
        raise ValueError(f"choose: need facts in both parts, got {len(stage1)} Stage 1 and {len(pool)} pool ids")
    missing = sorted((stage1 | pool) - set(by_id), key=id_key)
    if missing:
        raise ValueError(f"choose: ids not among the samples: {missing[:3]}")
    by_pair: dict[tuple[str, str], list] = {}
    for s in samples:
        by_pair.setdefault(pair_key(s), []).append(s)

    def siblings(sample, part: set[str], relations_only: bool = False) -> list:
        return [s for s in by_pair[pair_key(sample)] if s.id in part and s.id != sample.id
                and not (relations_only and s.label == NONE)]

    def first_relation(part: set[str]) -> str:
        return _first([i for i in part if by_id[i].label != NONE]) or _first(list(part))

    if trace_id is not None:
        if trace_id not in by_id:
            raise ValueError(f"trace_id {trace_id!r}: not a fact of the training split (ids look like 'train-12')")
        anchor = by_id[trace_id]
        if trace_id in stage1:
            sibling = _best_sibling(anchor, siblings(anchor, pool))
            return Trace(trace_id, sibling or first_relation(pool),
                         f"the trace_id setting ({trace_id}, in the Stage 1 quarter); {_other(sibling, 'pool')}")
        if trace_id in pool:
            # The Stage 1 role needs a relation: the expert's reasoning about none teaches little.
            sibling = _best_sibling(anchor, siblings(anchor, stage1, relations_only=True))
            return Trace(sibling or first_relation(stage1), trace_id,
                         f"the trace_id setting ({trace_id}, in the Stage 2 pool); {_other(sibling, 'Stage 1')}")
        raise ValueError(f"trace_id {trace_id!r}: in neither the Stage 1 quarter nor the Stage 2 pool")

    ranked = []
    for anchor in (by_id[i] for i in stage1 if by_id[i].label != NONE):
        sibling = _best_sibling(anchor, siblings(anchor, pool))
        if sibling is not None:
            ranked.append((by_id[sibling].label == NONE, id_key(anchor.id), anchor.id, sibling))
    if ranked:
        _, _, anchor_id, sibling = min(ranked)
        return Trace(anchor_id, sibling, "default: the first Stage 1 relation fact whose image and headline also "
                                         "give a pool fact (a relation where one exists)")
    return Trace(first_relation(stage1), first_relation(pool),
                 "default: no image-text pair is shared, so the first relation fact of each part")


# ----------------------------------------------------------------------------- the trace file


def write(run_dir: str | Path, trace: Trace) -> Path:
    """``RunLayout.trace``: ``{"stage1_id", "pool_id", "how"}``."""
    return write_json(RunLayout(run_dir).trace, asdict(trace))


def load(run_dir: str | Path) -> Trace | None:
    """The run's traced pair, or None when notebook 00 has not written it (a notebook run alone)."""
    path = RunLayout(run_dir).trace
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise FileFormatError(f"{path}: expected an object with {', '.join(ROLES)}")
    for name in (*ROLES, "how"):
        if not isinstance(data.get(name), str):
            raise FileFormatError(f"{path}: field {name!r}: must be a string")
    return Trace(data["stage1_id"], data["pool_id"], data["how"])
