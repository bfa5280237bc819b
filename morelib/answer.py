"""Parsing a model's output: the one parser shared by inference, evaluation, filtering and rewards."""

from __future__ import annotations

import re

from morelib.labels import RELATIONS, normalize_label

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
STEP_RE = re.compile(r"Step\s*([1-9])\s*:")

# The paper's format: <think> Step 1: .. Step 6: .. </think> <answer>LABEL</answer>, nothing after.
STRICT_FORMAT_RE = re.compile(
    r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>[^<]*)</answer>\s*$", re.DOTALL
)


def answer_tags(text: str) -> list[str]:
    """The contents of every ``<answer>...</answer>`` pair, as ``ANSWER_RE.findall`` gives them.

    Written with ``str.find`` because the regex is quadratic in unclosed tags, and a policy
    under RL will find such inputs.
    """
    open_tag, close_tag = "<answer>", "</answer>"
    tags, pos = [], 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:  # no later tag can be closed either
            break
        tags.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    return tags


def steps_in_order(think: str, n_steps: int = 6) -> bool:
    """True when the reasoning holds exactly Step 1 .. Step n, each once, in order."""
    return [int(s) for s in STEP_RE.findall(think)] == list(range(1, n_steps + 1))


def is_well_formed(text: str, n_steps: int = 6, relations: tuple[str, ...] = RELATIONS) -> bool:
    """The paper's format check: think block with Steps 1..6 in order, one answer tag holding a label."""
    m = STRICT_FORMAT_RE.match(text)
    if m is None or "<think>" in m["think"] or "<answer>" in m["think"]:
        return False
    return steps_in_order(m["think"], n_steps) and normalize_label(m["answer"], relations) is not None


def parse_label(text: str, relations: tuple[str, ...] = RELATIONS) -> str | None:
    """The predicted label of an output, or None when it cannot be parsed.

    With answer tags, exactly one tag must be present; without tags (label-only models) the
    whole output must be a label.
    """
    tags = answer_tags(text)
    if len(tags) > 1:
        return None
    if len(tags) == 1:
        return normalize_label(tags[0], relations)
    if "<answer>" in text or "</answer>" in text:
        return None
    return normalize_label(text, relations)
