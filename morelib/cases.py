"""Choosing the cases a reader sees (Figure 4 and notebook 07's error analysis): which samples the
models answer differently, the case that shows the method best (right, and with reasoning that
supports its answer), and a case as text. ``morelib.report.figure4`` draws the chosen case."""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import pandas as pd

# Figure 4's three models, as in the paper.
CASE_MODELS: tuple[str, ...] = ("sft_label_full", "stage1", "grpo_progressive")


def case_table(preds_by_model: Mapping[str, Mapping[str, str | None]], gold: Mapping[str, str]) -> pd.DataFrame:
    """One row per sample id that every model predicted: gold, each model's label and correctness."""
    ids = sorted(set(gold).intersection(*[set(p) for p in preds_by_model.values()]))
    rows = []
    for i in ids:
        row = {"id": i, "gold": gold[i]}
        for name, preds in preds_by_model.items():
            row[name] = preds[i]
            row[f"{name}_ok"] = preds[i] == gold[i]
        rows.append(row)
    return pd.DataFrame(rows, columns=["id", "gold"] + [c for n in preds_by_model for c in (n, f"{n}_ok")]).set_index("id")


def pick_case(
    preds_by_model: Mapping[str, Mapping[str, str | None]],
    gold: Mapping[str, str],
    models: Sequence[str] = CASE_MODELS,
    prefer: str = "grpo_progressive",
    supported: Mapping[str, bool | None] | None = None,
) -> str | None:
    """A sample id for Figure 4: where the models disagree, preferring ``prefer`` right.

    Ranks by (models disagree, ``prefer`` right, others wrong, distinct answers, gold is a
    relation), ties broken by the smallest id; None when no sample is predicted by all models.
    ``supported`` (sample id -> whether ``prefer``'s reasoning supports its answer, as
    ``morelib.faithfulness.check`` says) puts first the cases where ``prefer`` is right *and*
    supported, so the default figure never shows a lucky answer as the method's example.
    """
    missing = [m for m in models if m not in preds_by_model]
    if missing:
        raise ValueError(f"pick_case: no predictions for {missing}")
    table = case_table({m: preds_by_model[m] for m in models}, gold)
    if table.empty:
        return None
    others = [m for m in models if m != prefer]

    def rank(item):
        i, row = item
        answers = [row[m] for m in models]
        prefer_ok = bool(row.get(f"{prefer}_ok", False))
        return (
            prefer_ok and bool((supported or {}).get(i)),
            len(set(answers)) > 1,
            prefer_ok,
            sum(not row[f"{m}_ok"] for m in others),
            len(set(answers)),
            row["gold"] != "none",
        )

    best_rank = max(rank(item) for item in table.iterrows())
    return min(i for i, row in table.iterrows() if rank((i, row)) == best_rank)


def teaching_patterns(table: pd.DataFrame, models: Sequence[str]) -> dict[str, pd.Series]:
    """Boolean masks over ``case_table`` rows: all right, all wrong, each model alone right or wrong."""
    ok = table[[f"{m}_ok" for m in models]].astype(bool)
    patterns = {"all right": ok.all(axis=1), "all wrong": ~ok.any(axis=1)}
    if len(models) > 1:
        for m in models:
            col, rest = ok[f"{m}_ok"], ok.drop(columns=f"{m}_ok")
            patterns[f"only {m} right"] = col & ~rest.any(axis=1)
            patterns[f"only {m} wrong"] = ~col & rest.all(axis=1)
    return patterns


def changed_answers(table: pd.DataFrame, before: str, after: str) -> dict[str, pd.Series]:
    """Boolean masks over ``case_table`` rows: ``fixed`` (``before`` wrong, ``after`` right) and
    ``broken`` (``before`` right, ``after`` wrong): the facts behind a paired F1 gain."""
    was, now = table[f"{before}_ok"].astype(bool), table[f"{after}_ok"].astype(bool)
    return {"fixed": ~was & now, "broken": was & ~now}


def teaching_cases(table: pd.DataFrame, models: Sequence[str], k: int = 1) -> dict[str, list[str]]:
    """Up to ``k`` sample ids (smallest first) for each of ``teaching_patterns``."""
    return {name: list(table.index[mask][:k]) for name, mask in teaching_patterns(table, models).items()}


def describe_case(sample, rows_by_name: Mapping[str, dict], max_chars: int = 400) -> str:
    """A case as text: the sample, then each model's answer (marked) and the end of its output."""
    start, end = sample.entity_span
    marked = " ".join(sample.tokens[:start] + ("[[",) + sample.tokens[start:end] + ("]]",) + sample.tokens[end:])
    lines = [f"{sample.id}: {marked}", f"  object: {sample.object_name}; gold: {sample.label}"]
    for name, row in rows_by_name.items():
        mark = "right" if row["label"] == sample.label else "WRONG"
        text = row["text"].strip()
        text = text if len(text) <= max_chars else "… " + text[-max_chars:]
        lines.append(f"  {name}: {row['label']} ({mark})")
        lines.append(textwrap.indent(textwrap.fill(text, 100), "      "))
    return "\n".join(lines)
