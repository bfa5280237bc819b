"""One GRPO group, as a notebook shows it: ``num_generations`` completions of one prompt sampled
as TRL's trainer samples a rollout, each scored by the run's rewards, and their advantages.

The advantages are computed twice: :func:`group_advantages` in plain NumPy, and
:func:`trl_group_advantages` with the very lines TRL 1.16 runs (``GRPOTrainer``, multi-objective
aggregation ``sum_then_normalize``, ``scale_rewards="group"``), with TRL's own ``nanstd``.
Training itself is TRL's (:mod:`morelib.grpo`); this module is GRPO's arithmetic made visible.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# TRL adds this to the group's standard deviation before dividing (grpo_trainer.py, 1.16).
TRL_STD_EPSILON = 1e-4


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


