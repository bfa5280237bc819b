"""The one output parser shared by inference, filtering and rewards."""

import pytest

from morelib.answer import is_well_formed, parse_label, steps_in_order
from morelib.labels import RELATIONS

STEPS = " ".join(f"Step {i}: reasoning {i}." for i in range(1, 7))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer>/per/org/member_of</answer>", "/per/org/member_of"),
        ("<answer> PER/ORG/member_of </answer>", "/per/org/member_of"),  # slash, case, space
        ("<answer>None</answer>", "none"),
        ("/loc/loc/contain", "/loc/loc/contain"),  # label-only models answer bare labels
        ("<answer>/per/org/friend_of</answer>", None),  # not one of the 21
        ("<answer></answer>", None),
        ("<answer>none</answer><answer>/loc/loc/contain</answer>", None),  # two answers
        ("<answer>none", None),  # unclosed tag
        ("I think it is none", None),
        ("", None),
    ],
)
def test_parse_label(text, expected):
    assert parse_label(text) == expected


def test_well_formed_accepts_the_paper_format():
    assert is_well_formed(f"<think> {STEPS} </think> <answer>none</answer>")
    assert is_well_formed(f"<think>{STEPS}</think>\n<answer>per/per/partner</answer>\n")


@pytest.mark.parametrize(
    "text",
    [
        f"<think> {STEPS} </think> <answer>none</answer> trailing",  # text after answer
        f"<think> {STEPS} </think>",  # no answer
        f"<think> {STEPS} </think> <answer>none</answer><answer>none</answer>",
        f"<think> {STEPS} </think> <answer>/per/per/enemy</answer>",
        "<think> Step 1: a Step 2: b Step 3: c </think> <answer>none</answer>",  # 3 steps
        "<think> Step 2: a Step 1: b Step 3: c Step 4: d Step 5: e Step 6: f </think> <answer>none</answer>",
        f"<think> {STEPS} Step 6: again </think> <answer>none</answer>",  # repeated step
        f"<think> <think> {STEPS} </think> <answer>none</answer>",
        f"{STEPS} <answer>none</answer>",  # no think block
    ],
)
def test_well_formed_rejects(text):
    assert not is_well_formed(text)


def test_steps_in_order():
    assert steps_in_order(STEPS)
    assert not steps_in_order(STEPS.replace("Step 4", "Step 5"))


def test_every_relation_round_trips():
    for label in RELATIONS:
        assert parse_label(f"<answer>{label}</answer>") == label


def test_answer_tags_match_the_regex():
    import random

    from morelib.answer import ANSWER_RE, answer_tags

    rng = random.Random(0)
    pieces = ["<answer>", "</answer>", "a", "none", " ", "<think>"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert answer_tags(text) == ANSWER_RE.findall(text)


def test_parse_label_is_fast_on_many_unclosed_tags():
    # 20,000 unclosed tags made the regex take seconds; the linear scan must not.
    assert parse_label("<answer>none" * 20_000) is None
