"""Does the reasoning support the answer (morelib.faithfulness): Step 6 against the answer tag,
Step 4 against the true entity and types, Step 2 against the toy's cue, and the per-model rates."""

from pathlib import Path

import pytest

from morelib import faithfulness
from morelib.data import Sample

TOKENS = ("The", "favourite", "governs", "San", "Vireo")
SAMPLE = Sample(id="test-1", split="test", text=" ".join(TOKENS), tokens=TOKENS, entity="San Vireo",
                entity_span=(3, 5), object_name="obj_0", box=(0.5, 0.5, 0.3, 0.3), img_id="x.jpg",
                image_path=Path("/nowhere/img_org/test/x.jpg"), label="/per/loc/place_of_governance")
META = {"object": {"type": "per"}, "entity_type": "loc", "cue_words": "governs"}


def reasoning(cue: str, entity: str, step6: str, answer: str) -> str:
    return (f"<think>\nStep 1: The object is a solid red circle.\nStep 2: The text says the favourite {cue} {entity}.\n"
            f"Step 3: Solid means the subject.\nStep 4: The object is a per (red circle); the entity {entity} is a loc.\n"
            f"Step 5: Candidates for per/loc: none, /per/loc/place_of_governance.\nStep 6: {step6}\n</think>\n"
            f"<answer>{answer}</answer>")


def row(text: str, gold: str = "/per/loc/place_of_governance") -> dict:
    from morelib.answer import parse_label

    return {"id": "test-1", "text": text, "label": parse_label(text), "gold": gold}


GOOD = reasoning("governs", "San Vireo", '"governs" links them: /per/loc/place_of_governance.',
                 "/per/loc/place_of_governance")
MISQUOTED = reasoning("was born in", "San Ebon", '"was born in" links them: /per/loc/place_of_birth.',
                      "/per/loc/place_of_birth")
LUCKY = reasoning("was born in", "San Ebon", '"was born in" links them: /per/loc/place_of_birth.',
                  "/per/loc/place_of_governance")


def test_a_reasoned_answer_is_supported():
    check = faithfulness.check(row(GOOD), SAMPLE, META)
    assert check == {"id": "test-1", "correct": True, "step6_agrees": True, "step4_right": True,
                     "supports": True, "lucky": False, "quotes_in_text": True, "step2_quotes_cue": True}


def test_a_right_answer_after_other_reasoning_is_lucky():
    check = faithfulness.check(row(LUCKY), SAMPLE, META)
    assert check["correct"] and not check["step6_agrees"] and not check["step4_right"]
    assert check["lucky"] and check["step2_quotes_cue"] is False
    assert check["quotes_in_text"] is False  # "was born in" is not in the headline
    assert faithfulness.is_lucky(row(LUCKY), SAMPLE, META)


def test_the_cue_must_be_quoted_as_words():
    assert faithfulness.step2_quotes_cue(GOOD, "governs")
    assert not faithfulness.step2_quotes_cue(GOOD.replace("governs San", "governsX San"), "governs")
    assert not faithfulness.step2_quotes_cue("no steps at all", "governs")


def test_without_toy_facts_the_types_come_from_the_gold_relation_and_no_cue_is_judged():
    check = faithfulness.check(row(GOOD), SAMPLE, None)
    assert check["step4_right"] is True and check["step2_quotes_cue"] is None


def test_support_table_rates():
    preds = {"m": [row(GOOD), row(MISQUOTED), row(LUCKY)]}
    table = faithfulness.support_table(preds, {"test-1": SAMPLE}, {"test-1": META})
    rates = table.loc["m"]
    assert rates["outputs"] == 3
    assert rates["step6_agrees"] == pytest.approx(2 / 3)
    assert rates["supports_answer"] == pytest.approx(1 / 3)
    assert rates["lucky_share_of_correct"] == pytest.approx(1 / 2)  # GOOD and LUCKY are right, LUCKY is lucky
    assert rates["step2_quotes_cue"] == pytest.approx(1 / 3)
    assert rates["quotes_in_text"] == pytest.approx(1 / 3)  # only GOOD quotes words of the headline
    assert rates["misquoted_share_of_wrong"] == 1.0  # the one wrong answer misquoted the cue
    real = faithfulness.support_table(preds, {"test-1": SAMPLE}, None)
    assert "step2_quotes_cue" not in real.columns
    assert real.loc["m", "quotes_in_text"] == pytest.approx(1 / 3)  # needs only the output and the text
