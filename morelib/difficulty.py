"""The easy/hard split of the Stage 2 pool (the 75% of the training set Stage 1 did not use).

The Stage 1 model predicts every pool sample with greedy decoding: a correct label makes the
sample *easy*, a wrong or unparsable one *hard* (paper: 2,370 hard and 8,853 easy; 7,417 of the
easy and 796 of the hard are ``none``). Progressive Sample-Mixing (``morelib.mixing``) reads
the split (``RunLayout.difficulty_split``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from morelib.files import read_jsonl, write_jsonl
from morelib.labels import NONE, RELATIONS
from morelib.layout import RunLayout

EASY, HARD = "easy", "hard"
PARTS = (EASY, HARD)
POOL_KEY = "stage2_pool"
# The pool's predictions: RunLayout.predictions(*POOL_PREDICTIONS).
POOL_PREDICTIONS = ("stage1", POOL_KEY)

# Section 4 of the paper (the MORE training set, Qwen2.5-VL-7B after Stage 1).
REPORTED_COUNTS = {EASY: 8853, HARD: 2370}
REPORTED_NONE = {EASY: 7417, HARD: 796}


def difficulty(gold: str, pred: str | None) -> str:
    """``easy`` when the prediction is the gold label; a wrong or unparsable (None) one is ``hard``."""
    return EASY if pred is not None and pred == gold else HARD


def split_rows(predictions: Iterable[dict]) -> list[dict]:
    """Rows ``{"id", "label", "pred", "difficulty"}`` from prediction rows ``{"id", "gold", "label", ...}``."""
    rows, seen = [], set()
    for row in predictions:
        if row["id"] in seen:
            raise ValueError(f"sample {row['id']!r} predicted twice")
        seen.add(row["id"])
        rows.append({"id": row["id"], "label": row["gold"], "pred": row["label"],
                     "difficulty": difficulty(row["gold"], row["label"])})
    return rows


def write_split(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the split atomically: readers never see a half-written file."""
    return write_jsonl(path, rows)


SPLIT_FIELDS = ("id", "label", "difficulty")


def read_split(path: str | Path) -> list[dict]:
    """Rows of the difficulty split; a bad line is an error naming file, line and field.

    ``id``, ``label`` and ``difficulty`` are required (Stage 2 reads them); ``pred`` is kept
    for inspection when present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (notebook 04 writes the difficulty split)")
    seen: set[str] = set()

    def check(row: dict) -> None:
        for name in SPLIT_FIELDS:
            if not isinstance(row[name], str):
                raise ValueError(f"field {name!r}: expected a string, got {row[name]!r}")
        if row["difficulty"] not in PARTS:
            raise ValueError(f"field 'difficulty': {row['difficulty']!r} is not easy or hard")
        if row["label"] not in RELATIONS:
            raise ValueError(f"field 'label': {row['label']!r} is not one of the relations")
        if row["id"] in seen:
            raise ValueError(f"field 'id': {row['id']!r} appears twice")
        seen.add(row["id"])

    return read_jsonl(path, required=SPLIT_FIELDS, check=check)


def part_summary(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per part: number of samples, how many are ``none`` (gold), and the none ratio."""
    summary = {}
    for part in PARTS:
        labels = [r["label"] for r in rows if r["difficulty"] == part]
        n_none = sum(label == NONE for label in labels)
        summary[part] = {"count": len(labels), "none": n_none, "non_none": len(labels) - n_none,
                         "none_ratio": n_none / len(labels) if labels else 0.0}
    return summary


def comparison_table(rows: Sequence[dict], profile: str):
    """The paper's counts beside this run's, one row each, labelled with the run's ``profile``."""
    import pandas as pd

    def line(counts: dict, nones: dict) -> dict:
        total = counts[EASY] + counts[HARD]
        return {
            "hard": counts[HARD], "easy": counts[EASY],
            "hard share": counts[HARD] / total if total else 0.0,
            "easy: none": nones[EASY], "easy: none ratio": nones[EASY] / counts[EASY] if counts[EASY] else 0.0,
            "hard: none": nones[HARD], "hard: none ratio": nones[HARD] / counts[HARD] if counts[HARD] else 0.0,
            "hard: non-none": counts[HARD] - nones[HARD],
        }

    ours = part_summary(rows)
    return pd.DataFrame(
        [line(REPORTED_COUNTS, REPORTED_NONE),
         line({p: ours[p]["count"] for p in PARTS}, {p: ours[p]["none"] for p in PARTS})],
        index=["reported (paper)", f"this run ({profile})"],
    )


def label_table(rows: Sequence[dict], relations: Sequence[str] = RELATIONS):
    """Counts per gold label in each part (labels absent from the pool are left out)."""
    import pandas as pd

    counts = {part: Counter(r["label"] for r in rows if r["difficulty"] == part) for part in PARTS}
    table = pd.DataFrame(
        {part: [counts[part][label] for label in relations] for part in PARTS}, index=list(relations)
    )
    table["total"] = table[EASY] + table[HARD]
    table["hard share"] = (table[HARD] / table["total"]).where(table["total"] > 0, 0.0)
    return table[table["total"] > 0]


def pool_ids(run_dir: RunLayout | str | Path) -> list[str]:
    """The Stage 2 pool's sample ids, from the run's split ids (``RunLayout.split_ids``)."""
    from morelib.splits import read_split_ids

    return list(read_split_ids(run_dir)[POOL_KEY])


def pool_samples(data_dir: str | Path, ids: Sequence[str]) -> list:
    """The samples with ``ids`` (``{split}-{line}``), read from their splits, in the order of ``ids``."""
    from morelib.data import load_split
    from morelib.inference import select

    splits = sorted({i.rsplit("-", 1)[0] for i in ids})
    samples = [s for split in splits for s in load_split(data_dir, split)]
    return select(samples, ids)


def split_pool(run_dir: RunLayout | str | Path, data_dir: str | Path, model_or_backend, settings=None) -> list[dict]:
    """Predict the Stage 2 pool with the Stage 1 model (resumable) and write the difficulty split.

    ``model_or_backend`` is anything ``morelib.inference.predict_to_file`` accepts (a backend,
    a ``(model, processor)`` pair, a model path, or the child-process vLLM backend that
    ``make_backend(..., "vllm")`` returns). Greedy decoding unless ``settings`` says otherwise.
    """
    from morelib.inference import GenerationSettings, predict_to_file

    layout = RunLayout(run_dir)
    settings = settings or GenerationSettings(temperature=0.0)
    samples = pool_samples(data_dir, pool_ids(run_dir))
    predictions = predict_to_file(model_or_backend, samples, layout.predictions(*POOL_PREDICTIONS), settings)
    rows = split_rows(predictions)
    write_split(rows, layout.difficulty_split)
    return rows
