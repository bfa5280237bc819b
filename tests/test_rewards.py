"""The Stage 2 rewards: TRL's signature, the paper's behaviour, and reward-hacking attempts."""

import time

import pytest

from morelib.rewards import (
    REWARDS, format_reward, get_reward_funcs, make_answer_reward, make_length_reward, reward_components, total_reward,
)
from morelib.training_settings import GRPOSettings

STEPS = " ".join(f"Step {i}: looking at part {i} of the problem." for i in range(1, 7))
GOOD = f"<think> {STEPS} </think> <answer>/per/org/member_of</answer>"
LONG_GOOD = f"<think> {STEPS} {'More careful reasoning. ' * 60}</think> <answer>/per/org/member_of</answer>"
GOLD = "/per/org/member_of"
PAPER_LENGTH = 1024  # the paper's length threshold, in characters
length_reward = make_length_reward(PAPER_LENGTH)
answer_reward = make_answer_reward()


def grpo(names=("format", "length", "answer"), length_threshold=PAPER_LENGTH, **changes) -> GRPOSettings:
    """GRPO settings naming these rewards (what the trainer hands to get_reward_funcs)."""
    return GRPOSettings(reward_names=list(names), length_threshold=length_threshold, **changes)


def rewards_of(text, gold=GOLD, **options):
    return reward_components([text], [gold], grpo(**options))


def test_well_formed_long_correct_output_gets_every_reward():
    assert len(LONG_GOOD) > 1024
    assert rewards_of(LONG_GOOD) == {"format": [1.0], "length": [1.0], "answer": [1.0]}
    assert rewards_of(GOOD) == {"format": [1.0], "length": [0.0], "answer": [1.0]}


def test_conversational_completions_are_read_like_strings():
    as_parts = [{"role": "assistant", "content": [{"type": "text", "text": LONG_GOOD[:300]}, {"type": "text", "text": LONG_GOOD[300:]}]}]
    as_string = [{"role": "assistant", "content": LONG_GOOD}]
    for completion in (as_parts, as_string):
        assert format_reward([completion]) == [1.0]
        assert length_reward([completion]) == [1.0]
        assert answer_reward([completion], label=[GOLD]) == [1.0]


def test_answer_normalises_slash_case_and_whitespace_of_both_sides():
    text = GOOD.replace("/per/org/member_of", "  PER/ORG/Member_Of ")
    assert answer_reward([text], label=[GOLD]) == [1.0]
    assert answer_reward([GOOD], label=["per/org/member_of"]) == [1.0]
    assert answer_reward([GOOD], label=["none"]) == [0.0]


def test_trl_passes_extra_columns_and_rewards_ignore_them():
    out = answer_reward(prompts=[[{"role": "user", "content": "x"}]], completions=[GOOD], completion_ids=[[1, 2]], label=[GOLD], images=[[]], trainer_state=None)
    assert out == [1.0]


def test_answer_reward_rejects_missing_or_unknown_gold():
    with pytest.raises(ValueError, match="label"):
        answer_reward([GOOD])
    with pytest.raises(ValueError, match="position 1"):
        answer_reward([GOOD, GOOD], label=[GOLD, "/per/per/enemy"])
    with pytest.raises(ValueError, match="2 completions but 1 values of .label."):
        answer_reward([GOOD, GOOD], label=[GOLD])


@pytest.mark.parametrize(
    "name, text",
    [
        ("empty answer", f"<think> {STEPS} </think> <answer></answer>"),
        ("whitespace answer", f"<think> {STEPS} </think> <answer>   </answer>"),
        ("nested repeated tag", f"<think> {STEPS} </think> <answer><answer>{GOLD}</answer></answer>"),
        ("two answers, hedging", f"<think> {STEPS} </think> <answer>none</answer><answer>{GOLD}</answer>"),
        ("two identical answers", f"<think> {STEPS} </think> <answer>{GOLD}</answer> <answer>{GOLD}</answer>"),
        ("answer inside think", f"<think> {STEPS} <answer>none</answer> </think> <answer>{GOLD}</answer>"),
        ("label outside the 21", f"<think> {STEPS} </think> <answer>/per/org/enemy_of</answer>"),
        ("label in prose", f"<think> {STEPS} </think> <answer>It is {GOLD}</answer>"),
    ],
)
def test_malformed_answers_earn_neither_format_nor_answer(name, text):
    parts = rewards_of(text)
    assert parts["format"] == [0.0], name
    assert parts["answer"] == [0.0], name


@pytest.mark.parametrize(
    "steps",
    [
        "Step 1: a Step 2: b Step 3: c Step 5: e Step 4: d Step 6: f",   # out of order
        "Step 1: a Step 2: b Step 2: b Step 3: c Step 4: d Step 5: e Step 6: f",  # repeated
        "Step 1: a Step 2: b Step 3: c Step 4: d Step 5: e",            # missing one
        "Step 1: a Step 2: b Step 3: c Step 4: d Step 5: e Step 6: f Step 7: g",  # extra
        "",                                                              # none at all
    ],
)
def test_steps_must_be_one_to_six_once_in_order(steps):
    text = f"<think> {steps} </think> <answer>{GOLD}</answer>"
    assert format_reward([text]) == [0.0]
    assert answer_reward([text], label=[GOLD]) == [1.0]  # the label is still read (paper: separate rewards)


def test_text_after_answer_loses_format_and_padding_is_stopped_by_the_guard():
    padded = GOOD + " " + "filler " * 300
    assert len(padded) > 1024
    assert format_reward([padded]) == [0.0]
    assert length_reward([padded]) == [1.0]  # the paper's length reward counts any characters
    guarded = make_length_reward(PAPER_LENGTH, require_format=True)
    assert guarded([padded]) == [0.0]
    assert guarded([LONG_GOOD]) == [1.0]
    # A second label after </answer> never changes what was answered.
    assert answer_reward([GOOD + " actually none"], label=[GOLD]) == [1.0]
    assert answer_reward([GOOD + " actually none"], label=["none"]) == [0.0]


def test_answer_guard_requires_the_format():
    bare = GOLD  # a label-only output parses, but is not the reasoning format
    assert answer_reward([bare], label=[GOLD]) == [1.0]
    assert get_reward_funcs(grpo(["answer"], answer_requires_format=True))[0]([bare], label=[GOLD]) == [0.0]


def test_length_threshold_is_strictly_more_than_min_chars():
    f = make_length_reward(10)
    assert f(["x" * 10, "x" * 11, ""]) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        make_length_reward(-1)


def test_lookup_by_name_keeps_order_and_names_trl_logs():
    funcs = get_reward_funcs(grpo(["answer", "format"]))
    assert [f.__name__ for f in funcs] == ["answer_reward", "format_reward"]
    names = ["format", "length", "answer"]
    assert [f.__name__ for f in get_reward_funcs(grpo(names, length_threshold=10))] == ["format_reward", "length_reward", "answer_reward"]
    assert set(REWARDS) == {"format", "length", "answer", "consistency", "quotes", "entity", "grounded_answer"}
    # A profile's typo is refused when its settings are built (issue 22), naming the field ...
    with pytest.raises(ValueError, match=r"reward_names: 'lenght' is not one of .*\(did you mean 'length'\?\)"):
        grpo(["format", "lenght"])
    # ... and names asked for apart from the settings are checked by the door itself.
    with pytest.raises(ValueError, match=r"unknown reward name\(s\) \['lenght'\]"):
        get_reward_funcs(grpo(["format"]), names=["format", "lenght"])


def test_the_length_threshold_has_no_default():
    """The threshold comes from the settings (paper: 1,024; toy: smaller), never from a hidden default."""
    with pytest.raises(TypeError, match="length_threshold"):
        REWARDS["length"]()
    short, long = get_reward_funcs(grpo(["length"], 5))[0], get_reward_funcs(grpo(["length"], 500))[0]
    assert short(["x" * 100]) == [1.0] and long(["x" * 100]) == [0.0]
    guarded = get_reward_funcs(grpo(["length"], 5, length_requires_format=True))[0]
    assert guarded(["x" * 100]) == [0.0] and guarded([GOOD]) == [1.0]


def test_total_reward_is_a_weighted_sum():
    texts = [LONG_GOOD, GOOD, "none", "garbage"]
    gold = [GOLD, "none", "none", GOLD]
    assert total_reward(texts, gold, grpo()) == [3.0, 1.0, 1.0, 0.0]
    assert total_reward(texts, gold, grpo(reward_weights=[0.5, 0.25, 2.0])) == [2.75, 0.5, 2.0, 0.0]
    with pytest.raises(ValueError, match="1 weights for 3 rewards"):
        total_reward(texts, gold, grpo(reward_weights=[1.0]))


def test_giant_completions_are_scored_quickly():
    giant_reasoning = f"<think> {STEPS} " + "word " * 400_000 + f"</think> <answer>{GOLD}</answer>"
    many_steps = "<think> " + "Step 1: " * 100_000 + f"</think> <answer>{GOLD}</answer>"
    many_thinks = "<think> " * 100_000 + f"</think> <answer>{GOLD}</answer>"
    unclosed = "<think> " + "x" * 1_000_000
    # Tag spam at the size a 1,024-token completion can reach (a regex over unclosed <answer> tags
    # can be quadratic in their number).
    tag_spam = "<answer>" * 2_000
    start = time.perf_counter()
    out = reward_components([giant_reasoning, many_steps, many_thinks, unclosed, tag_spam], [GOLD] * 5, grpo())
    elapsed = time.perf_counter() - start
    assert out["format"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert out["length"] == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert out["answer"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert elapsed < 2.0, f"scoring giant completions took {elapsed:.2f} s"


def test_consistency_pays_when_step_6_concludes_the_answer():
    agreeing = GOOD.replace("Step 6: looking at part 6 of the problem.", "Step 6: so the relation is /per/org/member_of.")
    drifted = agreeing.replace("<answer>/per/org/member_of</answer>", "<answer>/per/org/leader_of</answer>")
    no_label = GOOD  # Step 6 names no label at all
    (consistency,) = get_reward_funcs(grpo(["consistency"]))
    assert consistency([agreeing, drifted, no_label]) == [1.0, 0.0, 0.0]
    # Beyond the paper: the paper's three rewards pay the drifted output's format and length alike.
    parts = reward_components([drifted], ["/per/org/leader_of"], grpo(["format", "answer", "consistency"]))
    assert parts == {"format": [1.0], "answer": [1.0], "consistency": [0.0]}


def test_quotes_pays_only_when_every_quoted_phrase_is_in_the_text():
    headline = "Photo : the striker joins Kestrel United"
    grounded = GOOD.replace("Step 6: looking at part 6 of the problem.", 'Step 6: "joins" gives /per/org/member_of.')
    misquoted = grounded.replace('"joins"', '"is the leader of"')
    partly = grounded.replace('"joins"', '"joins" and "heads"')
    unquoted = GOOD  # quotes nothing: nothing to check
    quoted_answer = GOOD.replace("<answer>", '<answer>"heads"')  # only the reasoning is checked
    (quotes,) = get_reward_funcs(grpo(["quotes"]))
    rewards = quotes([grounded, misquoted, partly, unquoted, quoted_answer], source_text=[headline] * 5)
    assert rewards == [1.0, 0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="source_text"):
        quotes([grounded])
    # The answer reward pays the misquoted reasoning's label all the same.
    parts = reward_components([misquoted], ["/per/org/member_of"], grpo(["answer", "quotes"]), source_text=[headline])
    assert parts == {"answer": [1.0], "quotes": [0.0]}


def test_entity_pays_only_when_steps_2_4_and_6_name_the_queried_entity():
    entity = "Kestrel United"
    steps = {2: "The text says the striker joins Kestrel United.", 4: "The object is a per; Kestrel United is an org.",
             6: '"joins" links the object to Kestrel United: /per/org/member_of.'}

    def reasoning(**changed):
        body = " ".join(f"Step {i}: {changed.get(f's{i}', steps.get(i, '...'))}" for i in range(1, 7))
        return f"<think> {body} </think> <answer>/per/org/member_of</answer>"

    named = reasoning()
    other_in_6 = reasoning(s6='"joins" links the object to Varo Bank: /per/org/member_of.')
    step4_missing = named.replace("Step 4: ", "")  # a step left out cannot pass
    (entity_reward,) = get_reward_funcs(grpo(["entity"]))
    rewards = entity_reward([named, other_in_6, step4_missing, GOOD], entity=[entity] * 4)
    assert rewards == [1.0, 0.0, 0.0, 0.0]
    assert entity_reward([named], entity=[""]) == [0.0]  # no entity given: nothing to name
    with pytest.raises(ValueError, match="entity"):
        entity_reward([named])
    parts = reward_components([other_in_6], ["/per/org/member_of"], grpo(["answer", "entity"]), entity=[entity])
    assert parts == {"answer": [1.0], "entity": [0.0]}  # the answer reward pays it all the same


def test_grounded_answer_pays_a_right_label_only_when_its_quotes_are_in_the_text():
    headline = "Photo : the striker joins Kestrel United"
    grounded = GOOD.replace("Step 6: looking at part 6 of the problem.", 'Step 6: "joins" gives /per/org/member_of.')
    misquoted = grounded.replace('"joins"', '"is the leader of"')  # a lucky answer: right label, cue not in the text
    wrong = grounded.replace("<answer>/per/org/member_of", "<answer>/per/org/leader_of")
    (grounded_answer,) = get_reward_funcs(grpo(["grounded_answer"]))
    assert grounded_answer.__name__ == "grounded_answer_reward"  # its own name in TRL's logs
    assert grounded_answer([grounded, misquoted, wrong], label=[GOLD] * 3, source_text=[headline] * 3) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="source_text"):
        grounded_answer([grounded], label=[GOLD])
    # The paper's answer reward pays the lucky answer in full.
    parts = reward_components([misquoted], [GOLD], grpo(["answer", "grounded_answer"]), source_text=[headline])
    assert parts == {"answer": [1.0], "grounded_answer": [0.0]}
    # With the format guard, a right and grounded label outside the format earns nothing.
    (guarded,) = get_reward_funcs(grpo(["grounded_answer"], answer_requires_format=True))
    assert guarded([grounded + " trailing"], label=[GOLD], source_text=[headline]) == [0.0]
