"""Does the reasoning support the answer? (beyond the paper)

A right label after reasoning that says something else is a lucky answer, not a reasoned one.
Four checks read a reasoning output the way a reader would, each on its own:

* **Step 6 agrees**: the label that Step 6 concludes (the last label it names) is the label in
  the answer tag. A plain English "none" ("none of the others fits") is not a label; ``none``
  counts only where it stands as one ("the relation is none.", "-> none").
* **The entity is named** in Steps 2 (the text), 4 (the types) and 6 (the decision): reasoning
  about another entity of the headline does not support an answer about this one.
* **The types are right**: the object type and the entity type Step 4 states are the true ones.
  Step 4 may write a type as the label's code (``per``) or in words ("a person", "an
  organisation", "a location", "miscellaneous"). The toy world knows the true types
  (``toy_meta.jsonl``); on the real data only a gold relation carries them (``/A/B/rel`` means
  object type A, entity type B), so for a gold ``none`` fact this check **cannot judge** and
  says so (None) instead of counting the fact either way.
* **The quotes are in the text**: every phrase the reasoning puts in double quotes occurs in the
  news text (True when it quotes nothing).

Names and quotes are compared as word tokens, case-insensitively, so MORE's tokenised text
(``Obama 's``, ``U.S .``) matches the ordinary spelling (``Obama's``) and the other way round.

An output **supports its answer** when all four hold; None when one of them cannot judge it.
:func:`support_table` gives each check's rate per model, over the outputs it could judge, and
how many it could not; :func:`is_lucky` marks right answers whose reasoning does not support them;
:func:`problems` says in words what a given output gets wrong, for the notebooks to print.

On the toy, one more rate says where the reasoning goes wrong: **Step 2 quotes the cue**, the
headline's words that link the subject to the entity (``cue_words`` in ``toy_meta.jsonl``). A
model that misquotes the cue then concludes the relation of the cue it wrote.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from morelib.answer import STEP_RE, parse_label
from morelib.labels import NONE, relation_types

RELATION_RE = re.compile(r"(?<![\w/])/(?:per|org|loc|misc)/(?:per|org|loc|misc)/[a-z_]+(?![\w/])")
# "none" is a label where no word follows it: "is none.", ": none", "(none)"; not "none of them".
NONE_LABEL_RE = re.compile(r"(?<![\w/])none(?![\w/])(?!\s*[A-Za-z])")
ENTITY_STEPS = (2, 4, 6)  # the text, the entity's type, the decision: faithful reasoning names the entity in each

# The ways to write a type: the label's code, then common words for it.
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "per": ("per", "person", "people", "human", "individual"),
    "org": ("org", "organization", "organisation", "company", "institution", "team", "group", "club", "party",
            "agency", "band", "business"),
    "loc": ("loc", "location", "place", "country", "city", "region", "town", "area", "venue"),
    "misc": ("misc", "miscellaneous", "other", "event", "award", "product", "work", "title", "concept"),
}
_TYPE_OF_WORD = {word: code for code, words in TYPE_WORDS.items() for word in words}
# A type word where a type is stated: after "is/as/a/an/type:", optionally with an article.
TYPE_RE = re.compile(r"\b(?:is|are|as|an?|type|type\s+is|type\s*:|category\s*:)\s+(?:an?\s+)?(?:\()?"
                     r"(" + "|".join(sorted(_TYPE_OF_WORD, key=len, reverse=True)) + r")s?\b", re.IGNORECASE)
_CLAUSE_RE = re.compile(r";|\n|(?<=[a-z)\]])\.\s|,\s*(?:while|whereas|and)\s", re.IGNORECASE)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "`": "'"})


def tokens(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens: "Obama's" and MORE's "Obama 's" give the same ones."""
    return _TOKEN_RE.findall(text.translate(_QUOTES).replace("''", '"').lower())


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(list(haystack[i:i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def mentions(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as whole tokens (case and tokenisation aside)."""
    return _contains(tokens(text), tokens(phrase))


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
    """The label Step 6 concludes: the last relation or label-like ``none`` it names."""
    body = step_text(text, 6) or ""
    found = [(m.start(), m.group()) for m in RELATION_RE.finditer(body)]
    found += [(m.start(), NONE) for m in NONE_LABEL_RE.finditer(body)]
    return max(found)[1] if found else None


def step6_agrees(text: str) -> bool:
    """Step 6 concludes the label of the answer tag (False when either is missing)."""
    answer = parse_label(text)
    return answer is not None and step6_label(text) == answer


def _types_in(clause: str) -> list[str]:
    return [_TYPE_OF_WORD[m.group(1).lower()] for m in TYPE_RE.finditer(clause)]


def step4_types(text: str, entity: str | None = None) -> tuple[str | None, str | None]:
    """(object type, entity type) as Step 4 states them; None where it states none.

    A clause about the entity (it says "entity" or names ``entity``) gives the entity type, one
    about the object the object type; otherwise the first type stated is the object's and the
    second the entity's, the order of the paper's Step 4.
    """
    body = step_text(text, 4) or ""
    obj = ent = None
    ordered: list[str] = []
    for clause in _CLAUSE_RE.split(body):
        found = _types_in(clause)
        if not found:
            continue
        ordered += found
        lower = clause.lower()
        about_entity = "entity" in lower or bool(entity and mentions(clause, entity))
        about_object = "object" in lower
        if about_entity and not about_object and ent is None:
            ent = found[0]
        elif about_object and not about_entity and obj is None:
            obj = found[0]
    if obj is None and ent is None:
        return (ordered[0] if ordered else None, ordered[1] if len(ordered) > 1 else None)
    if obj is None:
        rest = list(ordered)
        rest.remove(ent)
        obj = rest[0] if rest else None
    if ent is None:
        rest = list(ordered)
        rest.remove(obj)
        ent = rest[0] if rest else None
    return obj, ent


def types_right(text: str, object_type: str, entity_type: str, entity: str | None = None) -> bool:
    """Step 4 states the true object type and entity type."""
    return step4_types(text, entity) == (object_type, entity_type)


def names_entity(text: str, entity: str, steps: tuple[int, ...] = ENTITY_STEPS) -> bool:
    """Each of ``steps`` exists and names the queried ``entity`` (works on real data: the entity is given)."""
    bodies = [step_text(text, n) for n in steps]
    return bool(tokens(entity or "")) and all(body and mentions(body, entity) for body in bodies)


def steps_missing_entity(text: str, entity: str, steps: tuple[int, ...] = ENTITY_STEPS) -> list[int]:
    """The steps of ``steps`` that do not name ``entity`` (or do not exist)."""
    return [n for n in steps if not ((body := step_text(text, n)) and mentions(body, entity))]


def step2_quotes_cue(text: str, cue_words: str) -> bool:
    """Step 2 quotes the headline's cue words (toy only: the real data has no cue annotation)."""
    body = step_text(text, 2)
    return bool(body) and mentions(body, cue_words)


QUOTE_RE = re.compile(r'"([^"\n]+)"')


def quoted_phrases(text: str) -> list[str]:
    """The phrases the reasoning (the part before ``</think>``) puts in double quotes, labels left out
    (quoting a label is not quoting the text)."""
    reasoning = text.split("</think>")[0].translate(_QUOTES)
    return [q for q in QUOTE_RE.findall(reasoning) if not RELATION_RE.fullmatch(q.strip()) and q.strip() != NONE]


def misquotes(text: str, source_text: str) -> list[str]:
    """The quoted phrases that do not occur in ``source_text``."""
    source = tokens(source_text)
    return [q for q in quoted_phrases(text) if tokens(q) and not _contains(source, tokens(q))]


def quotes_in_text(text: str, source_text: str) -> bool:
    """Every phrase the reasoning quotes occurs in ``source_text`` (True when it quotes nothing)."""
    return not misquotes(text, source_text)


def true_types(gold: str, meta: Mapping | None = None) -> tuple[str, str] | None:
    """The sample's true (object type, entity type): from the toy's facts, else from a gold relation;
    None when neither knows them (a gold ``none`` fact on real data)."""
    if meta is not None and meta.get("object", {}).get("type") and meta.get("entity_type"):
        return meta["object"]["type"], meta["entity_type"]
    return relation_types(gold)


def check(row: Mapping, sample, meta: Mapping | None = None) -> dict:
    """The checks of one prediction row (``text``, ``label``, ``gold``) against its sample.

    ``types_right``, ``supports`` and ``lucky`` are None where the true types are unknown.
    """
    text = row["text"]
    types = true_types(row["gold"], meta)
    result = {"id": row["id"], "correct": row["label"] == row["gold"], "step6_agrees": step6_agrees(text),
              "names_entity": names_entity(text, sample.entity),
              "types_right": types_right(text, *types, entity=sample.entity) if types else None,
              "quotes_in_text": quotes_in_text(text, sample.text)}
    parts = [result[k] for k in ("step6_agrees", "names_entity", "types_right", "quotes_in_text")]
    result["supports"] = None if None in parts else all(parts)
    result["lucky"] = None if result["supports"] is None else result["correct"] and not result["supports"]
    cue = (meta or {}).get("cue_words")
    result["step2_quotes_cue"] = step2_quotes_cue(text, cue) if cue else None
    return result


def is_lucky(row: Mapping, sample, meta: Mapping | None = None) -> bool:
    """A right answer whose reasoning does not support it (False where that cannot be judged)."""
    return bool(check(row, sample, meta)["lucky"])


def problems(row: Mapping, sample, meta: Mapping | None = None) -> list[str]:
    """What the reasoning of ``row`` gets wrong, one phrase per failed check; empty when it supports
    its answer. A check that cannot judge the fact says so."""
    text = row["text"]
    found = []
    concluded, answer = step6_label(text), parse_label(text)
    if answer is None:
        found.append("no parsable answer")
    elif concluded != answer:
        found.append(f"Step 6 concludes {concluded or 'no label'}, the answer is {answer}")
    missing = steps_missing_entity(text, sample.entity)
    if missing:
        found.append(f"Step{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                     f"do{'es' if len(missing) == 1 else ''} not name the entity {sample.entity!r}")
    types = true_types(row["gold"], meta)
    if types is None:
        found.append("types: cannot judge (the true types of a none fact are unknown here)")
    else:
        stated = step4_types(text, sample.entity)
        if stated != types:
            found.append(f"Step 4 states types {stated[0]}/{stated[1]}, true {types[0]}/{types[1]}")
    wrong_quotes = misquotes(text, sample.text)
    if wrong_quotes:
        found.append("quotes not in the text: " + ", ".join(f'"{q}"' for q in wrong_quotes))
    return found


def verdict(row: Mapping, sample, meta: Mapping | None = None) -> str:
    """One line for a notebook: is the answer right, and does its reasoning support it?"""
    right = "right" if row["label"] == row["gold"] else "wrong"
    found = problems(row, sample, meta)
    if not found:
        return f"{right}; the reasoning supports the answer"
    judged = [p for p in found if not p.startswith("types: cannot judge")]
    head = "FLAG: the reasoning does not support the answer" if judged else "the other checks pass"
    return f"{right}; {head}: " + "; ".join(found)


CHECKS = ("step6_agrees", "names_entity", "types_right", "quotes_in_text")


def support_table(predictions: Mapping[str, Sequence[Mapping]], samples: Mapping, meta: Mapping | None = None):
    """Per model: each check's rate (``CHECKS``), the share that supports its answer (all four), and
    the share of right answers that are lucky, each over the outputs it could judge (rates in
    [0, 1]); ``not_judged`` counts the outputs whose types no one knows (gold ``none`` on real data),
    left out of ``types_right``, ``supports_answer`` and ``lucky_share_of_correct``. On the toy also:
    the share whose Step 2 quotes the cue, and the share of wrong answers that misquote it.
    """
    import pandas as pd

    rows = {}
    for model, preds in predictions.items():
        checks = pd.DataFrame([check(r, samples[r["id"]], (meta or {}).get(r["id"])) for r in preds])
        judged = checks[checks["supports"].notna()]
        right_judged = judged[judged["correct"]]
        rate = lambda frame, column: frame[column].astype(bool).mean() if len(frame) else float("nan")  # noqa: E731
        rows[model] = {"outputs": len(checks), "not_judged": len(checks) - len(judged),
                       **{name: rate(judged if name == "types_right" else checks, name) for name in CHECKS},
                       "supports_answer": rate(judged, "supports"),
                       "lucky_share_of_correct": rate(right_judged, "lucky")}
        quoted = checks["step2_quotes_cue"].dropna()
        if len(quoted):  # toy only
            wrong = checks[~checks["correct"] & checks["step2_quotes_cue"].notna()]
            rows[model]["step2_quotes_cue"] = quoted.astype(bool).mean()
            rows[model]["misquoted_share_of_wrong"] = (~wrong["step2_quotes_cue"].astype(bool)).mean() \
                if len(wrong) else float("nan")
    return pd.DataFrame(rows).T
