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


GOOD = reasoning("governs", "San Vireo", '"governs" links the favourite to San Vireo: /per/loc/place_of_governance.',
                 "/per/loc/place_of_governance")
MISQUOTED = reasoning("was born in", "San Ebon", '"was born in" links the favourite to San Ebon: /per/loc/place_of_birth.',
                      "/per/loc/place_of_birth")
LUCKY = reasoning("was born in", "San Ebon", '"was born in" links the favourite to San Ebon: /per/loc/place_of_birth.',
                  "/per/loc/place_of_governance")


def test_a_reasoned_answer_is_supported():
    check = faithfulness.check(row(GOOD), SAMPLE, META)
    assert check == {"id": "test-1", "correct": True, "step6_agrees": True, "names_entity": True,
                     "types_right": True, "quotes_in_text": True, "supports": True, "lucky": False,
                     "step2_quotes_cue": True}
    assert faithfulness.problems(row(GOOD), SAMPLE, META) == []
    assert faithfulness.verdict(row(GOOD), SAMPLE, META) == "right; the reasoning supports the answer"


def test_a_right_answer_after_other_reasoning_is_lucky():
    check = faithfulness.check(row(LUCKY), SAMPLE, META)
    assert check["correct"] and not check["step6_agrees"] and not check["names_entity"]
    assert check["types_right"]  # Step 4's types are right; it names another entity
    assert check["lucky"] and check["step2_quotes_cue"] is False
    assert check["quotes_in_text"] is False  # "was born in" is not in the headline
    assert faithfulness.is_lucky(row(LUCKY), SAMPLE, META)
    said = faithfulness.problems(row(LUCKY), SAMPLE, META)
    assert said == ["Step 6 concludes /per/loc/place_of_birth, the answer is /per/loc/place_of_governance",
                    "Steps 2, 4, 6 do not name the entity 'San Vireo'", 'quotes not in the text: "was born in"']
    assert faithfulness.verdict(row(LUCKY), SAMPLE, META).startswith("right; FLAG: the reasoning does not support")


@pytest.mark.parametrize("drop_step, breaks", [
    # Each check fails on its own, and fails the whole: no single step carries "supports".
    (lambda t: t.replace("to San Vireo:", "to Lena Ortiz:"), "names_entity"),
    (lambda t: t.replace("San Vireo is a loc", "San Vireo is a per"), "types_right"),
    (lambda t: t.replace('"governs" links', '"rules" links'), "quotes_in_text"),
    (lambda t: t.replace("San Vireo: /per/loc/place_of_governance.", "San Vireo: none."), "step6_agrees"),
])
def test_each_check_fails_on_its_own(drop_step, breaks):
    text = drop_step(GOOD)
    check = faithfulness.check(row(text), SAMPLE, META)
    failed = [name for name in faithfulness.CHECKS if check[name] is False]
    assert failed == [breaks] and check["supports"] is False


def test_the_entity_must_be_named_in_steps_2_4_and_6():
    """Figure 4's old case: Step 4 and Step 6 name the entity, Step 2 names another one."""
    text = GOOD.replace("the favourite governs San Vireo", "the favourite governs Port Ebon")
    check = faithfulness.check(row(text), SAMPLE, META)
    assert check["step6_agrees"] and check["types_right"] and not check["names_entity"] and not check["supports"]
    assert faithfulness.steps_missing_entity(text, "San Vireo") == [2]


def test_step6_reads_none_only_where_it_is_a_label():
    def step6(body):
        return faithfulness.step6_label(f"Step 6: {body} </think><answer>none</answer>")

    assert step6("None of the other candidates fits, so /per/loc/place_of_birth.") == "/per/loc/place_of_birth"
    assert step6("/per/loc/place_of_birth does not fit, so the relation is none.") == "none"
    assert step6("A bystander has no relation to X: none.") == "none"
    assert step6("Nothing links them; none of the relations applies.") is None
    assert step6("The answer is `none`.") == "none"


@pytest.mark.parametrize("step4, types", [
    ("The object is a per (red circle); the entity San Vireo is a loc.", ("per", "loc")),
    ("The object is a person and the entity San Vireo is a location.", ("per", "loc")),
    ("Object type: per. Entity type: loc.", ("per", "loc")),
    ("San Vireo is a place, while the object is a human.", ("per", "loc")),  # entity first, by its clause
    ("The object is an organisation; San Vireo is a country.", ("org", "loc")),
    ("The object is a politician.", (None, None)),  # no type stated
])
def test_step4_types_in_the_ways_they_are_written(step4, types):
    assert faithfulness.step4_types(f"Step 4: {step4} Step 5: ...", "San Vireo") == types


def test_the_cue_must_be_quoted_as_words():
    assert faithfulness.step2_quotes_cue(GOOD, "governs")
    assert not faithfulness.step2_quotes_cue(GOOD.replace("governs San", "governsX San"), "governs")
    assert not faithfulness.step2_quotes_cue("no steps at all", "governs")


def test_without_toy_facts_the_types_come_from_the_gold_relation_and_no_cue_is_judged():
    check = faithfulness.check(row(GOOD), SAMPLE, None)
    assert check["types_right"] is True and check["step2_quotes_cue"] is None


def test_a_none_fact_on_real_data_cannot_be_judged_and_is_not_counted():
    text = reasoning("governs", "San Vireo", "No relation links the object to San Vireo: none.", "none")
    check = faithfulness.check(row(text, gold="none"), SAMPLE, None)
    assert check["types_right"] is None and check["supports"] is None and check["lucky"] is None
    assert check["step6_agrees"] and check["names_entity"]  # the checks that can judge it still do
    assert "types: cannot judge" in faithfulness.verdict(row(text, gold="none"), SAMPLE, None)
    table = faithfulness.support_table({"m": [row(GOOD), row(text, gold="none")]}, {"test-1": SAMPLE}, None)
    assert table.loc["m", "not_judged"] == 1
    assert table.loc["m", "supports_answer"] == 1.0  # over the one judged output, not 1 of 2
    assert table.loc["m", "step6_agrees"] == 1.0  # over both


def test_support_table_rates():
    preds = {"m": [row(GOOD), row(MISQUOTED), row(LUCKY)]}
    table = faithfulness.support_table(preds, {"test-1": SAMPLE}, {"test-1": META})
    rates = table.loc["m"]
    assert rates["outputs"] == 3 and rates["not_judged"] == 0
    assert rates["step6_agrees"] == pytest.approx(2 / 3)
    assert rates["names_entity"] == pytest.approx(1 / 3)
    assert rates["types_right"] == 1.0
    assert rates["supports_answer"] == pytest.approx(1 / 3)
    assert rates["lucky_share_of_correct"] == pytest.approx(1 / 2)  # GOOD and LUCKY are right, LUCKY is lucky
    assert rates["step2_quotes_cue"] == pytest.approx(1 / 3)
    assert rates["quotes_in_text"] == pytest.approx(1 / 3)  # only GOOD quotes words of the headline
    assert rates["misquoted_share_of_wrong"] == 1.0  # the one wrong answer misquoted the cue
    real = faithfulness.support_table(preds, {"test-1": SAMPLE}, None)
    assert "step2_quotes_cue" not in real.columns
    assert real.loc["m", "quotes_in_text"] == pytest.approx(1 / 3)  # needs only the output and the text


# ----------------------------------------------------------------------------- real MORE lines


def more_sample(tmp_path, tokens, entity_span, relation):
    """A sample loaded by the data layer from a MORE line (the data layer's own test fixtures)."""
    from test_data import line, make_dir

    from morelib.data import load_split

    record = line(token=list(tokens), h={"name": " ".join(tokens[slice(*entity_span)]), "pos": list(entity_span)},
                  relation=relation)
    return load_split(make_dir(tmp_path, [record]), "train")[0]


def test_checks_read_mores_tokenised_text(tmp_path):
    """MORE's text is tokenised (``Obama 's``, ``U.S .``); reasoning writes ordinary English."""
    tokens = ["Michelle", "Obama", "'s", "new", "home", "near", "the", "U.S", ".", "Capitol"]
    sample = more_sample(tmp_path, tokens, (7, 10), "/per/loc/place_of_residence")
    assert (sample.text, sample.entity) == ("Michelle Obama 's new home near the U.S . Capitol", "U.S . Capitol")
    label = "/per/loc/place_of_residence"
    text = ("<think> Step 1: A woman stands at a door. Step 2: The headline says \"Michelle Obama's new home\" is "
            "near the U.S. Capitol. Step 3: The woman is Michelle Obama. Step 4: The object is a person; "
            "the entity U.S. Capitol is a location. Step 5: Candidates: none, /per/loc/place_of_residence. "
            "Step 6: Her home is \"near the U.S. Capitol\", so she lives by the U.S. Capitol: "
            f"{label}. </think> <answer>{label}</answer>")
    result = faithfulness.check({"id": sample.id, "text": text, "label": label, "gold": sample.label}, sample)
    assert result["quotes_in_text"] and result["names_entity"] and result["types_right"] and result["supports"]
    assert faithfulness.quotes_in_text('Step 2: "michelle obama\'s new home" </think>', sample.text)  # case aside
    assert not faithfulness.quotes_in_text('Step 2: "Obama home" </think>', sample.text)  # words left out
    assert not faithfulness.mentions("the U.S. Capitol", "Capitols")


def test_a_none_fact_from_a_more_line(tmp_path):
    tokens = ["Kestrel", "United", "fans", "cheer", "in", "Lisbon"]
    sample = more_sample(tmp_path, tokens, (5, 6), "none")
    text = ("<think> Step 1: A crowd. Step 2: The text is about fans in Lisbon. Step 3: The object is a fan. "
            "Step 4: The object is a person and Lisbon is a city. Step 5: Candidates for per/loc: none, ... "
            "Step 6: Nothing ties this fan to Lisbon: none. </think> <answer>none</answer>")
    result = faithfulness.check({"id": sample.id, "text": text, "label": "none", "gold": "none"}, sample)
    assert result["types_right"] is None and result["supports"] is None  # unknown types: not judged
    assert result["step6_agrees"] and result["names_entity"] and result["quotes_in_text"]
