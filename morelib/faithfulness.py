"""Does the reasoning support the answer? (beyond the paper)

A right label after reasoning that says something else is a lucky answer, not a reasoned one.
Two checks read a reasoning output the way a reader would:

* **Step 6 agrees**: the label that Step 6 concludes (the last label it names) is the label in
  the answer tag. This needs nothing but the output, so it works on the real data too.
* **Step 4 is right**: Step 4 names the sample's entity, and the object type and entity type
  it states are the true ones. The toy world knows the true types (``toy_meta.jsonl``); on the
  real data only gold relations carry them (``/A/B/rel`` means object type A, entity type B).

An output **supports its answer** when both hold; :func:`support_table` gives the rates per model,
and :func:`is_lucky` marks right answers whose reasoning does not support them.

On the toy, a third rate says where the reasoning goes wrong: **Step 2 quotes the cue**, the
headline's words that link the subject to the entity (``cue_words`` in ``toy_meta.jsonl``). A
model that misquotes the cue then concludes the relation of the cue it wrote.

A fourth check needs only the output and the text, so it also works on real data: **the quotes
are in the text**, every phrase the reasoning puts in double quotes occurs in the news text
(:func:`quotes_in_text`). The toy's reasoning quotes the cue in Step 6.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from morelib.answer import STEP_RE, parse_label
from morelib.labels import ENTITY_TYPES, relation_types

LABEL_RE = re.compile(r"(?<![\w/])(none|/(?:per|org|loc|misc)/(?:per|org|loc|misc)/[a-z_]+)(?![\w/])")
TYPE_RE = re.compile(r"\b(?:an?|is)\s+(per|org|loc|misc)\b")


def step_text(text: str, number: int) -> str | None:
    """The text of ``Step number:`` up to the next step, ``</think>`` or ``<answer>``; None if absent."""
    marks = list(STEP_RE.finditer(text))
    for i, mark in enumerate(marks):
        if int(mark.group(1)) == number:
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = text[mark.end():end]
            return re.split(r"</think>|<answer>", body)[0].strip()
    return None


def step6_label(text: str) -> str | None:
    """The label Step 6 concludes: the last label it names."""
    body = step_text(text, 6)
    found = LABEL_RE.findall(body) if body else []
    return found[-1] if found else None


def step6_agrees(text: str) -> bool:
    """Step 6 concludes the label of the answer tag (False when either is missing)."""
    answer = parse_label(text)
    return answer is not None and step6_label(text) == answer


def step4_types(text: str) -> tuple[str | None, str | None]:
    """(object type, entity type) as Step 4 states them, in that order; None where it names none."""
    body = step_text(text, 4) or ""
    found = [t for t in TYPE_RE.findall(body) if t in ENTITY_TYPES]
    return (found[0] if found else None, found[1] if len(found) > 1 else None)


def step4_right(text: str, entity: str, object_type: str, entity_type: str) -> bool:
    """Step 4 names ``entity`` and states the true object and entity types."""
    body = step_text(text, 4)
    return bool(body) and entity in body and step4_types(text) == (object_type, entity_type)


ENTITY_STEPS = (2, 4, 6)  # the text, the entity's type, the decision: faithful reasoning names the entity in each


def names_entity(text: str, entity: str, steps: tuple[int, ...] = ENTITY_STEPS) -> bool:
    """Each of ``steps`` exists and names the queried ``entity`` (works on real data: the entity is given)."""
    bodies = [step_text(text, n) for n in steps]
    return bool(entity) and all(body and entity in body for body in bodies)


def step2_quotes_cue(text: str, cue_words: str) -> bool:
    """Step 2 quotes the headline's cue words (toy only: the real data has no cue annotation)."""
    body = step_text(text, 2)
    return bool(body) and re.search(rf"(?<!\w){re.escape(cue_words)}(?!\w)", body) is not None


QUOTE_RE = re.compile(r'"([^"\n]+)"')


def quoted_phrases(text: str) -> list[str]:
    """The phrases the reasoning (the part before ``</think>``) puts in double quotes."""
    return QUOTE_RE.findall(text.split("</think>")[0])


def quotes_in_text(text: str, source_text: str) -> bool:
    """Every phrase the reasoning quotes occurs in ``source_text`` (True when it quotes nothing)."""
    source = " ".join(source_text.split())
    return all(" ".join(q.split()) in source for q in quoted_phrases(text))


def true_types(gold: str, meta: Mapping | None = None) -> tuple[str, str] | None:
    """The sample's true (object type, entity type): from the toy's facts, else from a gold relation."""
    if meta is not None and meta.get("object", {}).get("type") and meta.get("entity_type"):
        return meta["object"]["type"], meta["entity_type"]
    return relation_types(gold)


def check(row: Mapping, sample, meta: Mapping | None = None) -> dict:
    """The checks of one prediction row (``text``, ``label``, ``gold``) against its sample."""
    text = row["text"]
    agrees = step6_agrees(text)
    types = true_types(row["gold"], meta)
    step4 = step4_right(text, sample.entity, *types) if types else None
    supports = agrees and bool(step4) if step4 is not None else None
    correct = row["label"] == row["gold"]
    cue = (meta or {}).get("cue_words")
    return {"id": row["id"], "correct": correct, "step6_agrees": agrees, "step4_right": step4,
            "supports": supports, "lucky": correct and supports is False,
            "quotes_in_text": quotes_in_text(text, sample.text),
            "step2_quotes_cue": step2_quotes_cue(text, cue) if cue else None}


def is_lucky(row: Mapping, sample, meta: Mapping | None = None) -> bool:
    """A right answer whose reasoning does not support it."""
    return bool(check(row, sample, meta)["lucky"])


def support_table(predictions: Mapping[str, Sequence[Mapping]], samples: Mapping, meta: Mapping | None = None):
    """Per model: the share of outputs whose Step 6 agrees with the answer, whose Step 4 is right, that
    support their answer, whose quotes are all in the text, and the share of right answers that are
    lucky (rates in [0, 1]). On the toy also: the share whose Step 2 quotes the cue, and the share of
    wrong answers that misquote it.

    Step 4 is judged where the true types are known: every toy sample; gold relations on real data.
    """
    import pandas as pd

    rows = {}
    for model, preds in predictions.items():
        checks = pd.DataFrame([check(r, samples[r["id"]], (meta or {}).get(r["id"])) for r in preds])
        judged = checks[checks["step4_right"].notna()]
        right = checks[checks["correct"]]
        right_judged = right[right["supports"].notna()]
        rows[model] = {
            "outputs": len(checks),
            "step6_agrees": checks["step6_agrees"].mean(),
            "step4_right": judged["step4_right"].astype(bool).mean() if len(judged) else float("nan"),
            "supports_answer": judged["supports"].astype(bool).mean() if len(judged) else float("nan"),
            "lucky_share_of_correct": right_judged["lucky"].mean() if len(right_judged) else float("nan"),
            "quotes_in_text": checks["quotes_in_text"].mean(),
        }
        quoted = checks["step2_quotes_cue"].dropna()
        if len(quoted):  # toy only
            wrong = checks[~checks["correct"] & checks["step2_quotes_cue"].notna()]
            rows[model]["step2_quotes_cue"] = quoted.astype(bool).mean()
            rows[model]["misquoted_share_of_wrong"] = (~wrong["step2_quotes_cue"].astype(bool)).mean() \
                if len(wrong) else float("nan")
    return pd.DataFrame(rows).T
