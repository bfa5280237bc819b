"""Progressive Sample-Mixing (Stage 2) and its ablation variants.

Every GRPO epoch uses all hard samples plus some easy ones. How many easy ones per epoch
(``easy_counts``), by variant (each registered once in ``MIXING_VARIANTS``, with the name, colour
and description that the report and the evaluation read):

- ``progressive`` (the paper): epoch e (1-based) takes round(n_hard * gamma**(e-1)) easy
  samples, capped at n_easy; epoch 1 is 1:1 and the easy share halves with gamma = 0.5.
  The formula is **inferred** from the text (the paper's Eq. 6 was lost).
- ``raw``: the whole easy pool every epoch (the remaining 75% of the training set);
- ``balanced``: 1:1 every epoch, min(n_hard, n_easy);
- ``hard_only``: no easy samples.

Rounding is explicit: ``rounding="half_even"`` (default) is Python's ``round``, so 592.5 -> 592,
which gives the issue's 2,370 / 1,185 / 592 / 296 for 2,370 hard samples; ``"half_up"`` gives 593.

Easy samples are drawn (seeded) so that their none / non-none proportion matches the original
training set's. The mixes are built in advance, one list of ids per epoch; the trainer
concatenates them and trains one pass with ``shuffle_dataset=False`` (why: docs/paper-notes.md,
"Per-epoch mixes").
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from morelib.labels import NONE

ROUNDINGS: tuple[str, ...] = ("half_even", "half_up", "floor")


def _round(x: float, rounding: str) -> int:
    if rounding == "half_even":
        return int(round(x))
    if rounding == "half_up":
        return int(math.floor(x + 0.5))
    if rounding == "floor":
        return int(math.floor(x))
    raise ValueError(f"unknown rounding {rounding!r}; expected one of {ROUNDINGS}")


def _progressive(n_hard: int, n_easy: int, epoch: int, gamma: float, rounding: str) -> int:
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return min(_round(n_hard * gamma ** (epoch - 1), rounding), n_easy)


@dataclass(frozen=True)
class MixingVariant:
    """A Stage 2 data mix: how many easy samples each epoch takes, and how tables and figures show it."""

    name: str         # the settings' ``variant``; its run is grpo/<name>/ and checkpoints/grpo_<name>
    label: str        # Figure 3's legend; tables name an ablation "Stage 2 variant: <label>"
    colour: str       # Figure 3's bar colour
    description: str
    # (n_hard, n_easy, epoch (1-based), gamma, rounding) -> easy samples in that epoch
    easy_per_epoch: Callable[[int, int, int, float, str], int]
    paper_row: str | None = None  # the reported Table 1 row it reproduces; None = an ablation (Figure 3 only)

    @property
    def model_key(self) -> str:
        """Its final model's key: ``checkpoints/<model_key>``, ``predictions/<model_key>__<split>.jsonl``."""
        return f"grpo_{self.name}"


# The one registry, in Figure 3's (the paper's) order. A new variant is one entry here.
MIXING_VARIANTS: dict[str, MixingVariant] = {v.name: v for v in (
    MixingVariant("raw", "raw", "#bbbbbb", "the whole easy pool every epoch",
                  lambda n_hard, n_easy, epoch, gamma, rounding: n_easy),
    MixingVariant("balanced", "1:1", "#88aacc", "as many easy as hard samples every epoch",
                  lambda n_hard, n_easy, epoch, gamma, rounding: min(n_hard, n_easy)),
    MixingVariant("hard_only", "hard only", "#ddaa66", "no easy samples",
                  lambda n_hard, n_easy, epoch, gamma, rounding: 0),
    MixingVariant("progressive", "progressive (MORE-R1)", "#cc3333",
                  "Progressive Sample-Mixing: 1:1 in epoch 1, the easy share decaying by gamma per epoch",
                  _progressive, paper_row="MORE-R1"),
)}
VARIANTS: tuple[str, ...] = tuple(MIXING_VARIANTS)


def easy_counts(
    n_hard: int,
    n_easy: int,
    epochs: int,
    gamma: float,
    variant: str = "progressive",
    rounding: str = "half_even",
) -> list[int]:
    """The number of easy samples in each epoch (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if n_hard < 0 or n_easy < 0 or epochs < 1:
        raise ValueError(f"need n_hard, n_easy >= 0 and epochs >= 1, got {n_hard}, {n_easy}, {epochs}")
    rule = MIXING_VARIANTS[variant].easy_per_epoch
    return [rule(n_hard, n_easy, epoch, gamma, rounding) for epoch in range(1, epochs + 1)]


def none_share(labels: Sequence[str]) -> float:
    """The fraction of ``none`` among labels (e.g. the original training set's)."""
    if not labels:
        raise ValueError("none_share of an empty label list")
    return sum(1 for lab in labels if lab == NONE) / len(labels)


def _draw_easy(none_pool: list[str], other_pool: list[str], k: int, none_ratio: float, rng: random.Random, epoch: int) -> list[str]:
    """k easy ids, round(k * none_ratio) of them none; a short side is filled from the other."""
    want_none = _round(k * none_ratio, "half_even")
    n_none = min(want_none, len(none_pool))
    n_other = min(k - n_none, len(other_pool))
    n_none = min(k - n_other, len(none_pool))  # fill from the none side when non-none runs short
    if (n_none, n_other) != (want_none, k - want_none) and k < len(none_pool) + len(other_pool):
        warnings.warn(
            f"epoch {epoch}: wanted {want_none} none + {k - want_none} non-none easy samples, "
            f"pools hold {len(none_pool)} + {len(other_pool)}; drew {n_none} + {n_other}",
            stacklevel=3,
        )
    return rng.sample(none_pool, n_none) + rng.sample(other_pool, n_other)


def build_epoch_mixes(
    hard_ids: Sequence[str],
    easy_ids: Sequence[str],
    labels_by_id: Mapping[str, str],
    epochs: int,
    gamma: float,
    variant: str = "progressive",
    none_ratio: float | None = None,
    seed: int = 0,
    rounding: str = "half_even",
) -> list[list[str]]:
    """One shuffled list of sample ids per epoch: all hard ids plus a seeded draw of easy ids.

    ``none_ratio`` is the none share to keep among easy draws: the original training set's
    (pass ``none_share(train_labels)``). None means the share among all ids in
    ``labels_by_id``, which is right when it maps the whole training set.
    Each epoch draws independently, from its own seed, so a resumed run rebuilds the same mixes.
    """
    overlap = set(hard_ids) & set(easy_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} ids are both hard and easy, e.g. {sorted(overlap)[:3]}")
    missing = [i for i in [*hard_ids, *easy_ids] if i not in labels_by_id]
    if missing:
        raise ValueError(f"{len(missing)} ids have no label in labels_by_id, e.g. {missing[:3]}")
    if none_ratio is None:
        none_ratio = none_share(list(labels_by_id.values()))
    if not 0 <= none_ratio <= 1:
        raise ValueError(f"none_ratio must be in [0, 1], got {none_ratio}")
    # Sorted pools make the draw independent of the order the ids came in.
    none_pool = sorted(i for i in easy_ids if labels_by_id[i] == NONE)
    other_pool = sorted(i for i in easy_ids if labels_by_id[i] != NONE)
    counts = easy_counts(len(hard_ids), len(easy_ids), epochs, gamma, variant, rounding)
    mixes = []
    for epoch, k in enumerate(counts, start=1):
        rng = random.Random(f"{seed}:{epoch}")
        mix = sorted(hard_ids) + _draw_easy(none_pool, other_pool, k, none_ratio, rng, epoch)
        rng.shuffle(mix)
        mixes.append(mix)
    return mixes


def plan_table(mixes: Sequence[Sequence[str]], labels_by_id: Mapping[str, str], hard_ids: Sequence[str]) -> pd.DataFrame:
    """Per epoch: hard and easy counts, none and non-none counts, and the total."""
    hard = set(hard_ids)
    rows = []
    for epoch, mix in enumerate(mixes, start=1):
        n_hard = sum(1 for i in mix if i in hard)
        n_none = sum(1 for i in mix if labels_by_id[i] == NONE)
        easy_none = sum(1 for i in mix if i not in hard and labels_by_id[i] == NONE)
        rows.append({
            "epoch": epoch,
            "n_hard": n_hard,
            "n_easy": len(mix) - n_hard,
            "n_easy_none": easy_none,
            "n_none": n_none,
            "n_non_none": len(mix) - n_none,
            "total": len(mix),
        })
    return pd.DataFrame(rows).set_index("epoch")


def format_plan(plan: pd.DataFrame, variant: str = "") -> str:
    """The plan as text, printed before training."""
    head = f"Sample-mixing plan{f' ({variant})' if variant else ''}: {int(plan['total'].sum())} samples over {len(plan)} epochs"
    return head + "\n" + plan.to_string()


# ----------------------------------------------------------------------------- the saved mix


def _subset(ids: Sequence[str], limit: int | None, seed: int) -> list[str]:
    """A seeded subset of at most ``limit`` ids, in the original order."""
    if limit is None or limit >= len(ids):
        return list(ids)
    keep = set(random.Random(seed).sample(list(ids), limit))
    return [i for i in ids if i in keep]


def load_or_build_mix(path: str | Path, split_rows: Sequence[Mapping], *, variant: str, epochs: int, gamma: float,
                      none_ratio: float, seed: int, max_hard: int | None = None, max_easy: int | None = None,
                      write: bool = True) -> tuple[list[list[str]], list[str]]:
    """The per-epoch mixes and the hard ids they use, read from ``path`` or built and saved there.

    ``split_rows`` are the difficulty split's rows (``id``, ``label``, ``difficulty``). A saved mix
    built with other settings is refused, not reused (delete the file to rebuild); ``write=False``
    (a non-main process) only reads.
    """
    from morelib.files import read_json, write_json

    path = Path(path)
    key = {"variant": variant, "epochs": epochs, "gamma": gamma, "none_ratio": round(none_ratio, 12),
           "seed": seed, "max_hard_samples": max_hard, "max_easy_samples": max_easy}
    if path.exists():
        saved = read_json(path)
        for name, value in key.items():
            if saved.get("settings", {}).get(name) != value:
                raise ValueError(f"{path}: field 'settings.{name}' is {saved.get('settings', {}).get(name)!r} "
                                 f"but this run has {value!r}; delete {path} to rebuild the mix")
        return saved["epochs"], saved["hard_ids"]
    if not write:
        raise FileNotFoundError(f"{path}: the main process should have saved the mix before this one reads it")
    hard = [r["id"] for r in split_rows if r["difficulty"] == "hard"]
    easy = [r["id"] for r in split_rows if r["difficulty"] == "easy"]
    if not hard:
        raise ValueError(f"{path}: the difficulty split has no hard samples; every variant trains on them")
    labels = {r["id"]: r["label"] for r in split_rows}
    hard = _subset(hard, max_hard, seed)
    easy = _subset(easy, max_easy, seed + 1)
    mixes = build_epoch_mixes(hard, easy, labels, epochs=epochs, gamma=gamma, variant=variant,
                              none_ratio=none_ratio, seed=seed)
    write_json(path, {"settings": key, "hard_ids": hard, "n_easy_pool": len(easy), "epochs": mixes}, indent=None)
    return mixes, hard


def prompts_per_batch(per_device_batch: int, num_processes: int, grad_accum: int, group_size: int) -> int:
    """Distinct prompts in one GRPO generation batch (TRL counts completions per device)."""
    completions = per_device_batch * num_processes * grad_accum
    if completions % group_size:
        raise ValueError(f"{completions} completions per update (per_device_train_batch_size x processes x "
                         f"gradient_accumulation_steps) is not a multiple of num_generations={group_size}")
    return completions // group_size


def epoch_end_steps(mixes: Sequence[Sequence[str]], prompts_per_generation: int, num_iterations: int) -> list[int]:
    """The optimizer update at which each mix epoch ends.

    A generation batch that straddles two epochs counts to the earlier one; TRL drops the rows of
    an incomplete last batch, so the last epoch ends at the last full one.
    """
    ends, total = [], 0
    for e, mix in enumerate(mixes):
        total += len(mix)
        batches = total // prompts_per_generation if e == len(mixes) - 1 else -(-total // prompts_per_generation)
        ends.append(batches * num_iterations)
    return ends
