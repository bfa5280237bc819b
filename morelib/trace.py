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
with :func:`load`. The ``trace_id`` setting pins one of the two.

GRPO's advantages are computed here twice: :func:`group_advantages` in plain NumPy, and
:func:`trl_group_advantages` with the very lines TRL 1.16 runs (``GRPOTrainer``, multi-objective
aggregation ``sum_then_normalize``, ``scale_rewards="group"``), with TRL's own ``nanstd``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from morelib.files import FileFormatError, read_json, write_json
from morelib.labels import NONE
from morelib.layout import RunLayout

# TRL adds this to the group's standard deviation before dividing (grpo_trainer.py, 1.16).
TRL_STD_EPSILON = 1e-4
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
    from morelib.annotate import ResponseStore, latest_records

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


# ----------------------------------------------------------------------------- one GRPO group


def group_advantages(rewards: Sequence[float] | np.ndarray, num_generations: int | None = None,
                     epsilon: float = TRL_STD_EPSILON) -> np.ndarray:
    """GRPO advantages in plain NumPy: ``(r - group mean) / (group std + epsilon)``.

    ``rewards`` holds whole groups one after the other (``num_generations`` each; None = one
    group). The standard deviation is the sample one (``ddof=1``), as TRL's ``nanstd`` computes it.
    A group whose rewards are all equal gets advantage 0 everywhere: it teaches nothing.
    """
    r = np.asarray(rewards, dtype=float)
    size = num_generations or len(r)
    if size < 2 or len(r) % size:
        raise ValueError(f"{len(r)} rewards do not make groups of {size} (a group needs at least 2)")
    groups = r.reshape(-1, size)
    mean = groups.mean(axis=1, keepdims=True)
    std = groups.std(axis=1, ddof=1, keepdims=True)
    return ((groups - mean) / (std + epsilon)).reshape(-1)


def trl_group_advantages(rewards: Sequence[float], num_generations: int) -> np.ndarray:
    """The same advantages as TRL 1.16 computes them (``GRPOTrainer._generate_and_score_completions``
    with ``scale_rewards="group"``), using TRL's ``nanstd``. TRL exposes no advantage function of its
    own, so these are its lines, kept beside :func:`group_advantages` as a check."""
    import torch
    from trl.trainer.utils import nanstd

    r = torch.tensor(list(rewards), dtype=torch.float32)
    mean_grouped = torch.nanmean(r.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    std_grouped = nanstd(r.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    advantages = (r - mean_grouped) / (std_grouped + TRL_STD_EPSILON)
    return torch.nan_to_num(advantages, nan=0.0).numpy().astype(float)


def group_generation_settings(grpo) -> "GenerationSettings":  # noqa: F821 (imported lazily)
    """Decoding of a GRPO rollout from the GRPO settings: temperature, top-p, top-k, repetition
    penalty and completion length as TRL's trainer samples them."""
    from morelib.settings import GenerationSettings

    return GenerationSettings(temperature=grpo.temperature, top_p=grpo.top_p,
                              top_k=grpo.top_k if grpo.top_k is not None else 0,
                              repetition_penalty=grpo.repetition_penalty,
                              max_new_tokens=grpo.max_completion_length, batch_size=grpo.num_generations,
                              seed=grpo.seed)


def sample_group(backend, sample, grpo, template: str | None = None) -> list[str]:
    """``grpo.num_generations`` completions for one prompt, sampled as a GRPO rollout (seeded).

    ``backend`` is an in-process backend (``morelib.inference.TransformersBackend``): the prompt is
    repeated once per completion in one batch, so every row draws its own tokens.
    """
    settings = group_generation_settings(grpo)
    return [g.text for g in backend.generate([sample] * grpo.num_generations, settings, template)]


def score_group(completions: Sequence[str], gold: str, grpo, source_text: str = "", entity: str = ""):
    """One row per completion: its parsed label, length in characters, each reward, the weighted total (Eq. 5) and the advantage,
    in NumPy and as TRL computes it. ``source_text`` is the sample's news text and ``entity`` its queried entity
    (read by the ``quotes`` and ``entity`` rewards)."""
    import pandas as pd

    from morelib.answer import parse_label
    from morelib.rewards import reward_components, total_reward

    n = len(completions)
    columns = dict(label=[gold] * n, source_text=[source_text] * n, entity=[entity] * n)
    table = pd.DataFrame({"label": pd.Series([parse_label(c) for c in completions], dtype=object),
                          "characters": [len(c) for c in completions]})
    for name, values in reward_components(completions, settings=grpo, **columns).items():
        table[name] = values
    table["reward"] = total_reward(completions, settings=grpo, **columns)
    table["advantage"] = group_advantages(table["reward"], len(completions))
    table["advantage (TRL)"] = trl_group_advantages(table["reward"].tolist(), len(completions))
    table.index = pd.RangeIndex(1, len(completions) + 1, name="completion")
    return table


# ----------------------------------------------------------------------------- display


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
