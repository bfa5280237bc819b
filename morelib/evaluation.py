"""The run's models (``morelib.run_models``): where each is, its cached predictions on a split, and its scores.

Every model the chain produces is evaluated with the shared inference function
(``morelib.inference.predict_to_file``, greedy) into ``RunLayout.predictions(key, split)``.
A complete file is reused; a partial one is resumed; a model that is missing is skipped with a
printed note, so notebook 06 runs alone on whatever the run holds. With the vLLM backend each
model is predicted in a child process of its own, so its GPU memory is free before the next.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from morelib import metrics
from morelib.answer import parse_label
from morelib.layout import RunLayout
from morelib.run_models import MODEL_KEYS, SEED_RUN, display_name, run_model

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def seed_runs(run_dir: RunLayout | str | Path, keys: Sequence[str]) -> list[str]:
    """Finished extra-seed runs of the given Stage 2 keys (``checkpoints/grpo_<variant>_seed<N>``),
    by key and then seed."""
    layout = RunLayout(run_dir)
    found = []
    for key in keys:
        seeds = sorted(int(m["seed"]) for path in layout.checkpoint(key).parent.glob(f"{key}_seed*")
                       if (m := SEED_RUN.fullmatch(path.name)) and m["base"] == key
                       and layout.model_done(path.name).exists())
        found += [f"{key}_seed{seed}" for seed in seeds]
    return found


def model_location(run_dir: RunLayout | str | Path, key: str, base_model: str | Path) -> str | Path | None:
    """Where a model is, or None when it is missing.

    Zero-shot is the base model: a local directory, or a hub id (``org/name``, paper profile).
    Every other model is ``RunLayout.checkpoint(key)`` holding a finished model.
    """
    if key == "zero_shot":
        path = Path(base_model)
        if path.is_dir():
            return path
        text = str(base_model)
        hub_like = _HUB_ID.fullmatch(text) and not path.is_absolute() and not text.startswith(("runs/", "."))
        return text if hub_like else None
    # done.json is written last: a folder without it holds an unfinished (or killed) training run.
    layout = RunLayout(run_dir)
    return layout.checkpoint(key) if layout.model_done(key).exists() else None


REQUIRED_FIELDS = ("id", "gold", "text")


def load_predictions(path: str | Path) -> list[dict]:
    """Rows of a predictions file (``inference.read_predictions``) with the fields scoring needs;
    ``label`` is re-derived with ``parse_label`` when absent. A missing file is an error.

    A torn last line (a prediction run killed mid-write) is left out; it is predicted again.
    """
    from morelib.inference import read_predictions

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    rows = read_predictions(path, required=REQUIRED_FIELDS)
    for row in rows:
        if "label" not in row:
            row["label"] = parse_label(row["text"])
    return rows


def evaluate_models(
    samples: Sequence,
    run_dir: RunLayout | str | Path,
    base_model: str | Path,
    keys: Sequence[str] = MODEL_KEYS,
    split: str = "test",
    settings=None,
    settings_by_key: Mapping | None = None,
    backend: str | None = None,
) -> dict[str, list[dict]]:
    """Prediction rows (in ``samples`` order) for each model in ``keys`` that exists or is cached.

    ``settings`` is a ``morelib.inference.GenerationSettings`` (greedy transformers by default): the
    decoding and the backend (``morelib.inference.backend_for``). ``settings_by_key`` overrides it
    for some models (e.g. a shorter token budget for label-only SFT, or the served model name of
    each model with the ``openai`` backend). ``backend`` overrides ``settings.backend``. With
    ``vllm``, each model runs in a child process of its own.
    """
    from morelib.inference import GenerationSettings, backend_for, predict_to_file
    from morelib.prompts import prompt_template

    settings = settings or GenerationSettings(temperature=0.0)
    layout = RunLayout(run_dir)
    wanted = [s.id for s in samples]
    results: dict[str, list[dict]] = {}
    for key in keys:
        path = layout.predictions(key, split)
        cached = {r["id"]: r for r in load_predictions(path)} if path.exists() else {}
        if cached and all(i in cached for i in wanted):
            print(f"{key}: cached predictions {path}")
            results[key] = [cached[i] for i in wanted]
            continue
        location = model_location(run_dir, key, base_model)
        if location is None:
            where = base_model if key == "zero_shot" else layout.checkpoint(key)
            note = f" ({len(cached)} of {len(wanted)} predictions cached)" if cached else ""
            print(f"{key}: SKIPPED, no model at {where}{note}")
            continue
        print(f"{key}: predicting with {location}")
        model_settings = (settings_by_key or {}).get(key, settings)
        # vllm: a SubprocessBackend, so the engine and its GPU memory end with the child process.
        model = backend_for(model_settings, location, backend=backend)
        known = run_model(key)
        predict_to_file(model, samples, path, model_settings,
                        template=prompt_template(known.prompt if known else "reasoning"))
        rows = {r["id"]: r for r in load_predictions(path)}
        results[key] = [rows[i] for i in wanted]
        del model
        gc.collect()  # one model in memory at a time
    return results


def score_rows(rows: Sequence[dict], n_boot: int = 1000, seed: int = 0,
               clusters: Mapping[str, str] | None = None) -> dict:
    """The MORE metric, macro-F1 and the bootstrap intervals of one model's predictions.

    ``clusters`` (sample id -> its image-text pair, e.g. ``img_id``) resamples whole pairs.
    """
    gold = [r["gold"] for r in rows]
    pred = [r["label"] for r in rows]
    result = metrics.score(gold, pred)
    result["macro_f1"] = metrics.macro_f1(gold, pred)
    if n_boot and rows:
        keys = [clusters[r["id"]] for r in rows] if clusters is not None else None
        for metric, (low, high) in metrics.bootstrap_ci(gold, pred, n=n_boot, seed=seed, clusters=keys).items():
            result[f"{metric}_low"], result[f"{metric}_high"] = low, high
    return result


def image_text_pairs(samples) -> dict[str, str]:
    """Sample id -> its image-text pair (``img_id``): the bootstrap's resampling unit. A pair holds
    several facts (MORE: about 5.7), and the facts of one pair share its image and its text."""
    return {s.id: s.img_id for s in samples}


def toy_facts(data_dir: str | Path) -> dict[str, dict] | None:
    """The toy world's facts by sample id (true object and entity types), or None for real data."""
    from morelib import toy

    return toy.meta_by_id(data_dir) if toy.meta_path(data_dir).is_file() else None


def scores_table(scores: Mapping[str, dict]) -> pd.DataFrame:
    """One row per model key with its display name; scores in [0, 1]."""
    rows = [{"key": k, "model": display_name(k), **s} for k, s in scores.items()]
    return pd.DataFrame(rows).set_index("key")
