"""The Stage 1 / Stage 2 pool split: a seeded ``fraction`` of every relation of the training set
goes to Stage 1 (the expert annotates it), the rest is the Stage 2 pool (difficulty, GRPO).
Notebook 01 writes the ids (``annotation/split_ids.json``); filtering, difficulty and SFT read them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from morelib.files import FileFormatError, read_json, write_json
from morelib.layout import RunLayout


def stratified_split(samples, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(stage1 ids, stage2 pool ids): ``round(fraction * n)`` of every relation, at least one.

    ``round`` is Python's, half to even (2.5 -> 2), the one rounding rule of the package: the
    Stage 2 mix rounds the same way (``morelib.mixing``). The paper states none (inferred).

    Each relation draws from its own generator seeded by (seed, relation), so the choice for
    one relation does not depend on the others. Both lists keep the data's order.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    by_label: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        by_label[s.label].append(s.id)
    chosen: set[str] = set()
    for label, ids in by_label.items():
        k = max(1, round(fraction * len(ids)))
        chosen.update(random.Random(f"{seed}:{label}").sample(ids, k))
    order = [s.id for s in samples]
    return [i for i in order if i in chosen], [i for i in order if i not in chosen]


def write_split_ids(run_dir: str | Path, stage1: list[str], pool: list[str]) -> Path:
    """``annotation/split_ids.json``: ``{"stage1": [...], "stage2_pool": [...]}`` (written atomically)."""
    return write_json(RunLayout(run_dir).split_ids, {"stage1": stage1, "stage2_pool": pool}, indent=None)


def read_split_ids(run_dir: str | Path) -> dict[str, list[str]]:
    path = RunLayout(run_dir).split_ids
    data = read_json(path)
    for key in ("stage1", "stage2_pool"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise FileFormatError(f"{path}: field {key!r}: must be a list of sample ids")
    return data
