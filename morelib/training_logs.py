"""Training-log analysis: a finished model's trainer log, a GRPO variant's step log, each reward's
curve, a summary per variant, how often the length reward pays each kind of answer, and the
Stage 2 experiments of a run. ``morelib.report`` draws the curves."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from morelib.rewards import ANSWER_LOG_KEYS, answer_log_key


def training_log(model_dir: str | Path) -> pd.DataFrame:
    """A finished model's trainer log (``checkpoints/<model>/log.jsonl``) as a DataFrame."""
    from morelib.training import read_log

    return pd.DataFrame(read_log(model_dir))


REWARD_KEYS = {"answer": ANSWER_LOG_KEYS[0], "format": "rewards/format_reward/mean",
               "length": "rewards/length_reward/mean", "total": "reward"}


def reward_curve(log: pd.DataFrame, name: str) -> pd.Series:
    """One reward's batch mean per logged step (``REWARD_KEYS``); "answer" is the grounded_answer
    reward where a run uses it in the answer's place, and a reward the run did not use is NaN."""
    key = answer_log_key(log.columns) if name == "answer" else REWARD_KEYS[name]
    return log[key] if key in log else pd.Series(np.nan, index=log.index)


def grpo_log(grpo_dir: str | Path) -> pd.DataFrame:
    """A GRPO variant's step log (``grpo/<variant>/log.jsonl``) as a DataFrame indexed by step."""
    from morelib.files import read_jsonl
    from morelib.layout import GrpoRunFolder

    return pd.DataFrame(read_jsonl(GrpoRunFolder(grpo_dir).step_log)).set_index("step")


def grpo_summary(grpo_dirs: Mapping[str, str | Path], window: int = 3) -> pd.DataFrame:
    """Per variant: steps, answer/format/length rewards over the first and last ``window`` generation
    steps, the share of groups without signal, entropy, KL, s/step and peak memory."""
    rows = []
    for variant, grpo_dir in grpo_dirs.items():
        frame = grpo_log(grpo_dir)
        gen = frame[frame["generated"]]
        row = {"variant": variant, "steps": int(frame.index.max())}
        for name in ("answer", "format", "length"):
            row[f"{name}_start"] = reward_curve(gen, name).head(window).mean()
            row[f"{name}_end"] = reward_curve(gen, name).tail(window).mean()
        row["frac_reward_zero_std"] = gen["frac_reward_zero_std"].mean()
        if "entropy" in gen:
            row["entropy"] = gen["entropy"].mean()
        row["kl_end"] = frame["kl"].tail(window).mean() if "kl" in frame else float("nan")
        row["completion_length"] = gen["completions/mean_length"].mean()
        # The first step pays for warm-up (first generation, allocations); leave it out.
        times = frame["step_time"] if "step_time" in frame else frame["time_s"].diff()
        row["s_per_step"] = times.iloc[1:].mean() if len(frame) > 1 else times.mean()
        row["peak_rss_mb"] = frame["peak_rss_mb"].max()
        if "cuda_peak_mb" in frame:
            row["cuda_peak_mb"] = frame["cuda_peak_mb"].max()
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def length_reward_by_group(rows: Sequence[dict], length_reward) -> pd.DataFrame:
    """How often ``length_reward`` (``morelib.rewards.get_reward_funcs(settings, ["length"])``) pays
    a model's outputs (``text``, ``gold``, ``label`` rows), by gold label (none or a relation) and by
    answer (right or wrong), with their mean length.

    The length reward should pay complete reasoning, whatever the answer. Where its rate differs
    between these groups, it pays for the label too: on the toy, reasoning that ends in ``none``
    is shorter, so a threshold inside the range of complete reasoning pays relation answers,
    right or wrong, more often than ``none`` (notebook 05, section 1).
    """
    frame = pd.DataFrame({"chars": [len(r["text"]) for r in rows],
                          "paid": length_reward([r["text"] for r in rows]),
                          "gold": ["none" if r["gold"] == "none" else "relation" for r in rows],
                          "answer": ["right" if r["label"] == r["gold"] else "wrong" for r in rows]})
    groups = {f"gold {g}": frame[frame["gold"] == g] for g in ("none", "relation")}
    groups |= {f"answer {a}": frame[frame["answer"] == a] for a in ("right", "wrong")}
    return pd.DataFrame([{"group": name, "n": len(part), "length_reward_rate": part["paid"].mean(),
                          "mean_chars": part["chars"].mean(), "min_chars": part["chars"].min()}
                         for name, part in groups.items() if len(part)]).set_index("group")


def stage2_experiments(experiments_dir: str | Path) -> pd.DataFrame | None:
    """The Stage 2 experiments of a run (``experiments/*/result.json``, written by
    ``benchmarks/stage2_valid.py`` and ``benchmarks/self_training_valid.py``), one row each, best
    valid gain first; None when there are none."""
    import json

    from morelib.layout import RunLayout

    folders = [d for d in Path(experiments_dir).iterdir() if d.is_dir()] if Path(experiments_dir).is_dir() else []
    results = sorted(RunLayout(d).result for d in folders)  # each experiment is a run directory
    rows = [json.loads(path.read_text()) for path in results if path.is_file()]
    if not rows:
        return None
    frame = pd.DataFrame(rows).set_index("name")
    frame["overrides"] = frame["overrides"].map(lambda items: ", ".join(items))
    frame[["ci_low", "ci_high"]] = pd.DataFrame(frame.pop("ci95").tolist(), index=frame.index)
    return frame.sort_values("gain", ascending=False)
