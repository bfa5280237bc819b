"""The regex filter: what it keeps, what it rejects and why, and the Stage 1 SFT file."""

import json
from types import SimpleNamespace

import pytest

from morelib import filtering
from morelib.files import FileFormatError
from morelib.filtering import check_response
from morelib.layout import RunLayout

GOLD = "/per/org/member_of"
STEPS = "\n".join(f"Step {i}: thought {i}." for i in range(1, 7))
GOOD = f"<think>\n{STEPS}\n</think>\n<answer>{GOLD}</answer>"


def steps(numbers):
    return "\n".join(f"Step {i}: thought." for i in numbers)


def test_keeps_a_good_reply_verbatim():
    assert check_response(GOOD, GOLD) == (None, GOOD)
    assert check_response("  " + GOOD + "\n\n", GOLD) == (None, GOOD)


@pytest.mark.parametrize("answer", ["per/org/member_of", " /PER/ORG/Member_Of ", "\nper/org/member_of\n"])
def test_forgives_slash_case_and_whitespace_and_writes_the_canonical_label(answer):
    reason, completion = check_response(f"<think>{STEPS}</think><answer>{answer}</answer>", GOLD)
    assert reason is None
    assert completion.endswith(f"<answer>{GOLD}</answer>")


@pytest.mark.parametrize("text, reason", [
    (None, "empty_response"),
    ("   ", "empty_response"),
    (f"{STEPS}\n<answer>{GOLD}</answer>", "missing_think"),
    (f"<think>{STEPS}\n<answer>{GOLD}</answer>", "missing_think"),  # never closed
    (f"<think>{STEPS}</think><think>more</think><answer>{GOLD}</answer>", "several_thinks"),
    (f"<think>{STEPS}</think>\nAnswer: {GOLD}", "missing_answer"),
    (f"<think>{STEPS}</think><answer>{GOLD}", "missing_answer"),
    (f"<think>{STEPS}</think><answer>{GOLD}</answer>\n<answer>{GOLD}</answer>", "several_answers"),
    # an answer smuggled into the reasoning, then the real one
    (f"<think>{STEPS} <answer>none</answer></think><answer>{GOLD}</answer>", "several_answers"),
    (f"Sure! <think>{STEPS}</think><answer>{GOLD}</answer>", "bad_structure"),
    (f"<think>{STEPS}</think><answer>{GOLD}</answer> Hope this helps.", "bad_structure"),
    (f"<answer>{GOLD}</answer><think>{STEPS}</think>", "bad_structure"),
    (f"<think>{steps([1, 2, 4, 5, 6])}</think><answer>{GOLD}</answer>", "missing_step"),
    (f"<think>{steps([1, 2, 3, 4, 5])}</think><answer>{GOLD}</answer>", "missing_step"),
    (f"<think>{steps([1, 3, 2, 4, 5, 6])}</think><answer>{GOLD}</answer>", "steps_out_of_order"),
    (f"<think>{steps([1, 2, 3, 4, 5, 6, 6])}</think><answer>{GOLD}</answer>", "steps_out_of_order"),
    (f"<think>{steps([1, 2, 3, 4, 5, 6, 7])}</think><answer>{GOLD}</answer>", "steps_out_of_order"),
    (f"<think>{STEPS}</think><answer></answer>", "unknown_label"),
    (f"<think>{STEPS}</think><answer>member_of</answer>", "unknown_label"),
    (f"<think>{STEPS}</think><answer>{GOLD} or none</answer>", "unknown_label"),
    (f"<think>{STEPS}</think><answer>/per/org/leader_of</answer>", "wrong_answer"),
    (f"<think>{STEPS}</think><answer>none</answer>", "wrong_answer"),
])
def test_rejects_with_a_reason(text, reason):
    assert check_response(text, GOLD) == (reason, None)


def test_step_words_must_be_real_steps():
    # "Step 1 :" with a space still counts; "Steps 1-6" or "Step one" do not
    spaced = "\n".join(f"Step {i} : x" for i in range(1, 7))
    assert check_response(f"<think>{spaced}</think><answer>{GOLD}</answer>", GOLD)[0] is None
    assert check_response(f"<think>Steps 1-6 done.</think><answer>{GOLD}</answer>", GOLD)[0] == "missing_step"


def test_records_without_a_reply():
    samples = [SimpleNamespace(id=i, label=GOLD) for i in ("a", "b", "c")]
    records = {"a": {"response": GOOD, "error": None}, "b": {"response": None, "error": "gave up"}}
    results = filtering.filter_records(samples, records)
    assert [r.reason for r in results] == [None, "error", "no_response"]
    assert filtering.reason_counts(results) == {"kept": 1, "error": 1, "no_response": 1}


def test_build_stage1_uses_the_latest_successful_record(tmp_path, monkeypatch):
    samples = [SimpleNamespace(id=f"train-{i}", label=label)
               for i, label in enumerate([GOLD, "none", GOLD, "none"], 1)]
    monkeypatch.setattr("morelib.data.load_split", lambda data_dir, split: samples)
    run = tmp_path / "run"
    layout = RunLayout(run)
    layout.split_ids.parent.mkdir(parents=True)
    layout.split_ids.write_text(json.dumps({"stage1": ["train-1", "train-2", "train-3"], "stage2_pool": ["train-4"]}))
    good_none = GOOD.replace(GOLD, "none")
    records = [
        {"sample_id": "train-1", "prompt_hash": "old", "model": "m", "response": "garbage", "error": None},
        {"sample_id": "train-1", "prompt_hash": "new", "model": "m", "response": GOOD, "error": None},
        {"sample_id": "train-2", "prompt_hash": "new", "model": "m", "response": good_none, "error": None},
        {"sample_id": "train-2", "prompt_hash": "new", "model": "m", "response": None, "error": "timeout"},
        {"sample_id": "train-3", "prompt_hash": "new", "model": "m", "response": good_none, "error": None},
        {"sample_id": "train-4", "prompt_hash": "new", "model": "m", "response": good_none, "error": None},
    ]
    layout.expert_store.write_text("".join(json.dumps(r) + "\n" for r in records))
    results = filtering.build_stage1(run, tmp_path / "data")
    assert [(r.id, r.reason) for r in results] == [("train-1", None), ("train-2", None), ("train-3", "wrong_answer")]
    rows = filtering.read_stage1(layout.stage1_set)
    assert rows == [{"id": "train-1", "label": GOLD, "completion": GOOD},
                    {"id": "train-2", "label": "none", "completion": good_none}]
    rejected = [json.loads(line) for line in filtering.rejected_path(layout.stage1_set).read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("train-3", "wrong_answer")]
    table = filtering.label_table(results)
    assert table.loc[GOLD, "sent"] == 2 and table.loc[GOLD, "kept"] == 1 and table.loc["none", "keep_rate"] == 1.0


@pytest.mark.parametrize("row, field", [
    ({"id": "b"}, "label"),
    ({"id": "b", "label": "none", "completion": None}, "completion"),
])
def test_read_stage1_names_the_bad_line(tmp_path, row, field):
    path = tmp_path / "stage1.jsonl"
    path.write_text(json.dumps({"id": "a", "label": "none", "completion": "x"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(FileFormatError, match=rf"stage1.jsonl:2: field '{field}'"):
        filtering.read_stage1(path)
