"""The easy/hard split: correct = easy, wrong or unparsable = hard, counts and none ratios."""

import json

import pytest

from morelib.data import load_split
from morelib.difficulty import (
    POOL_PREDICTIONS,
    comparison_table,
    difficulty,
    label_table,
    part_summary,
    read_split,
    split_pool,
    split_rows,
)
from morelib.files import FileFormatError
from morelib.inference import Generation
from morelib.layout import RunLayout


def prediction(i, gold, pred):
    return {"id": f"train-{i}", "gold": gold, "text": f"<answer>{pred}</answer>", "label": pred,
            "prompt_tokens": 5, "completion_tokens": 2}


SYNTHETIC = [
    prediction(1, "none", "none"),                     # easy none
    prediction(2, "none", "none"),                     # easy none
    prediction(3, "/per/org/member_of", "/per/org/member_of"),  # easy non-none
    prediction(4, "none", "/per/org/member_of"),       # hard none (false positive)
    prediction(5, "/per/org/member_of", "none"),       # hard non-none (missed)
    prediction(6, "/org/loc/locate_at", None),         # hard: unparsable
    prediction(7, "/org/loc/locate_at", "/loc/loc/contain"),  # hard: wrong label
]


def test_difficulty_rule():
    assert difficulty("none", "none") == "easy"
    assert difficulty("/per/org/member_of", "none") == "hard"
    assert difficulty("none", None) == "hard"


def test_split_rows_and_summary():
    rows = split_rows(SYNTHETIC)
    assert [r["difficulty"] for r in rows] == ["easy"] * 3 + ["hard"] * 4
    assert rows[5] == {"id": "train-6", "label": "/org/loc/locate_at", "pred": None, "difficulty": "hard"}
    summary = part_summary(rows)
    assert summary["easy"] == {"count": 3, "none": 2, "non_none": 1, "none_ratio": pytest.approx(2 / 3)}
    assert summary["hard"] == {"count": 4, "none": 1, "non_none": 3, "none_ratio": pytest.approx(1 / 4)}

    table = comparison_table(rows, "toy")
    assert list(table.index) == ["reported (paper)", "this run (toy)"]
    assert list(comparison_table(rows, "paper").index) == ["reported (paper)", "this run (paper)"]
    assert table.loc["reported (paper)", "hard"] == 2370 and table.loc["reported (paper)", "easy: none"] == 7417
    assert table.loc["reported (paper)", "hard: non-none"] == 1574
    assert table.loc["this run (toy)", "hard"] == 4 and table.loc["this run (toy)", "hard: none"] == 1

    labels = label_table(rows)
    assert labels.loc["/org/loc/locate_at", "hard"] == 2 and labels.loc["none", "easy"] == 2
    assert "/per/per/partner" not in labels.index


def test_duplicate_predictions_are_refused():
    with pytest.raises(ValueError, match="train-1"):
        split_rows(SYNTHETIC + [SYNTHETIC[0]])


GOOD_ROW = '{"id": "a", "label": "none", "pred": "none", "difficulty": "easy"}\n'


@pytest.mark.parametrize("second_line, field", [
    ('{"id": "b", "label": "none", "pred": "none", "difficulty": "medium"}', "difficulty"),
    ('{"id": "b", "label": "/per/per/cousin", "difficulty": "hard"}', "label"),
    ('{"id": "a", "label": "none", "difficulty": "hard"}', "id"),
    ('{"id": "b", "label": "none"}', "difficulty"),
    ('{"id": 7, "label": "none", "difficulty": "hard"}', "id"),
])
def test_read_split_names_the_bad_line_and_field(tmp_path, second_line, field):
    path = tmp_path / "split.jsonl"
    path.write_text(GOOD_ROW + "\n" + second_line + "\n")  # a blank line still counts
    with pytest.raises(FileFormatError, match=rf"split\.jsonl:3: field '{field}'"):
        read_split(path)


def test_read_split_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.jsonl: no such file"):
        read_split(tmp_path / "nothing.jsonl")


def test_split_pool_writes_the_run_files(tmp_path, toy_world):
    data_dir = toy_world.data_dir  # read-only: the split and the predictions go to run_dir
    train = load_split(data_dir, "train")
    pool = [s.id for s in train[::2]]
    run_dir = tmp_path / "run"
    layout = RunLayout(run_dir)
    layout.split_ids.parent.mkdir(parents=True)
    layout.split_ids.write_text(json.dumps({"stage1": [], "stage2_pool": pool}))

    class Oracle:
        """Right on every other sample, unparsable otherwise."""

        def generate(self, batch, settings, template=None):
            return [Generation(f"<answer>{s.label}</answer>" if int(s.id.split("-")[1]) % 4 == 1 else "?", 9, 3)
                    for s in batch]

    rows = split_pool(run_dir, data_dir, Oracle())
    assert [r["id"] for r in rows] == pool
    assert read_split(layout.difficulty_split) == rows
    assert [r["id"] for r in map(json.loads, layout.predictions(*POOL_PREDICTIONS).read_text().splitlines())] == pool
    assert {r["difficulty"] for r in rows} == {"easy", "hard"}
    for r in rows:
        expected = "easy" if int(r["id"].split("-")[1]) % 4 == 1 else "hard"
        assert r["difficulty"] == expected
