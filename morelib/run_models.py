"""The run's models: each model the chain can produce, by the key its checkpoint and predictions
are filed under, with the name tables and figures show, its Table 1 group and the reported row it
reproduces. The Stage 2 variants come from ``morelib.mixing.MIXING_VARIANTS``, so a variant is
registered in one place; ``morelib.evaluation`` predicts and scores these models, ``morelib.report``
lays them out, and the settings check model names against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from morelib.mixing import MIXING_VARIANTS
from morelib.reported import GENERATION_NO_REASONING as GEN_PLAIN
from morelib.reported import GENERATION_REASONING as GEN_REASON


@dataclass(frozen=True)
class RunModel:
    """A model the chain produces: its file stem, its display name, its Table 1 group."""

    key: str                 # checkpoints/<key>/ and predictions/<key>__<split>.jsonl
    name: str                # shown in tables and figures
    group: str               # the Table 1 group
    paper_row: str | None    # the reported row it reproduces, if any
    in_table1: bool = True   # the Stage 2 ablation variants go to Figure 3 instead
    prompt: str = "reasoning"  # student prompt (morelib.prompts): "label" for the paper's direct-answer baselines


RUN_MODELS: tuple[RunModel, ...] = (
    RunModel("zero_shot", "zero-shot (base model)", GEN_PLAIN, "Qwen2.5-VL-7B(-zs)", prompt="label"),
    RunModel("sft_label_full", "label-only SFT", GEN_PLAIN, "Qwen2.5-VL-SFT", prompt="label"),
    RunModel("sft_label_25", "label-only SFT (25%)", GEN_PLAIN, "Qwen2.5-VL-SFT(25%)", prompt="label"),
    RunModel("stage1", "MORE-R1 (Stage 1)", GEN_REASON, "MORE-R1(Stage 1)"),
    # The Stage 2 variants (morelib.mixing's registry): the paper's rows in Table 1, then the ablations.
    *(RunModel(v.model_key, v.paper_row or f"Stage 2 variant: {v.label}", GEN_REASON, v.paper_row,
               in_table1=v.paper_row is not None)
      for v in sorted(MIXING_VARIANTS.values(), key=lambda v: v.paper_row is None)),
)
MODELS_BY_KEY: dict[str, RunModel] = {m.key: m for m in RUN_MODELS}
MODEL_KEYS: tuple[str, ...] = tuple(MODELS_BY_KEY)


SEED_RUN = re.compile(r"(?P<base>grpo_\w+?)_seed(?P<seed>\d+)")


def run_model(key: str) -> RunModel | None:
    """The model a key names: one of ``RUN_MODELS``, or a Stage 2 variant trained again with an
    extra seed (``grpo_<variant>_seed<N>``, notebook 05's ``extra_seeds``), which stays out of Table 1."""
    if key in MODELS_BY_KEY:
        return MODELS_BY_KEY[key]
    m = SEED_RUN.fullmatch(key)
    if m and m["base"] in MODELS_BY_KEY:
        base = MODELS_BY_KEY[m["base"]]
        return RunModel(key, f"{base.name} (seed {m['seed']})", base.group, None, in_table1=False, prompt=base.prompt)
    return None


def display_name(key: str) -> str:
    model = run_model(key)
    return model.name if model else key
