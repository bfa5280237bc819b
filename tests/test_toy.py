"""The toy world: deterministic, in the MORE layout, and a task that needs both modalities."""

import json
from collections import Counter

import pytest

from morelib import toy
from morelib.data import load_entity_dict, load_images, load_split, validate
from morelib.labels import NONE, RELATIONS, candidates

SMALL = dict(train=120, valid=40, test=60)


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_data(tmp_path_factory):
    """The dataset the notebooks use (default sizes, seed 0)."""
    return toy.generate(tmp_path_factory.mktemp("toy"), toy.ToyConfig(seed=0))


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = toy.generate(tmp_path / "a", toy.ToyConfig(seed=3, **SMALL))
    b = toy.generate(tmp_path / "b", toy.ToyConfig(seed=3, **SMALL))
    files_a, files_b = all_files(a), all_files(b)
    assert files_a.keys() == files_b.keys()
    assert {"txt/train.txt", "ent_test_dict.pth", "rel2id.json", "caption_dict.json", "toy_meta.jsonl"} <= files_a.keys()
    assert [k for k in files_a if files_a[k] != files_b[k]] == []


def test_another_seed_gives_another_dataset(tmp_path):
    a = toy.generate(tmp_path / "a", toy.ToyConfig(seed=0, **SMALL))
    b = toy.generate(tmp_path / "b", toy.ToyConfig(seed=1, **SMALL))
    assert (a / "txt" / "train.txt").read_text() != (b / "txt" / "train.txt").read_text()


def test_rerun_into_the_same_directory_leaves_no_stale_images(tmp_path):
    toy.generate(tmp_path, toy.ToyConfig(seed=0, **SMALL))
    toy.generate(tmp_path, toy.ToyConfig(seed=1, **SMALL))
    referenced = {s.img_id for s in load_split(tmp_path, "train")}
    assert {p.name for p in (tmp_path / "img_org" / "train").iterdir()} == referenced


def test_a_larger_test_split_keeps_train_valid_and_the_first_test_facts(tmp_path):
    # What lets a profile enlarge its test split without retraining: train and valid are drawn
    # first, and the test split's first facts are the smaller split's.
    small = toy.generate(tmp_path / "small", toy.ToyConfig(seed=0, **SMALL))
    large = toy.generate(tmp_path / "large", toy.ToyConfig(seed=0, **{**SMALL, "test": 3 * SMALL["test"]}))
    for split in ("train", "valid"):
        assert (small / "txt" / f"{split}.txt").read_bytes() == (large / "txt" / f"{split}.txt").read_bytes()
    small_test = (small / "txt" / "test.txt").read_text().splitlines()
    large_test = (large / "txt" / "test.txt").read_text().splitlines()
    assert len(large_test) >= 3 * SMALL["test"] and large_test[:len(small_test)] == small_test


def test_check_config_names_the_setting_a_written_world_differs_in(tmp_path):
    cfg = toy.ToyConfig(seed=0, **SMALL)
    data_dir = toy.generate(tmp_path, cfg)
    toy.check_config(data_dir, cfg)  # the same settings: nothing to say
    with pytest.raises(ValueError, match=r"toy_config\.json: this toy world was written with test=60, the settings ask for 61"):
        toy.check_config(data_dir, toy.ToyConfig(seed=0, **{**SMALL, "test": 61}))
    # A world written before the settings were kept beside it: checked by its sizes only.
    toy.config_path(data_dir).unlink()
    toy.check_config(data_dir, toy.ToyConfig(seed=5, **SMALL))
    with pytest.raises(ValueError, match=r"test\.txt: this toy world holds \d+ test facts, the settings ask for 180"):
        toy.check_config(data_dir, toy.ToyConfig(seed=0, **{**SMALL, "test": 180}))


def test_cli_writes_requested_sizes(tmp_path, capsys):
    argv = ["generate", str(tmp_path), "--seed", "2", "--train", "80", "--valid", "30", "--test", "30",
            "--object_counts", "2", "3"]
    assert toy.main(argv) == 0
    samples = load_split(tmp_path, "train")
    assert 80 <= len(samples) < 80 + 16  # whole image-text pairs are kept: at most 2 entities x 4 objects over
    assert set(Counter(s.img_id for s in samples).values()) <= {2, 3, 4, 6}  # 2 or 3 objects x 1 or 2 entities
    assert "train:" in capsys.readouterr().out
    assert toy.main(["baselines", str(tmp_path)]) == 0
    assert "image_only" in capsys.readouterr().out


def test_cli_help_and_one_line_errors(tmp_path, capsys):
    helps = {}
    for argv in (["--help"], ["generate", "--help"], ["baselines", "--help"]):
        with pytest.raises(SystemExit) as info:
            toy.main(argv)
        assert info.value.code == 0
        helps[argv[0]] = capsys.readouterr().out
    assert "generate" in helps["--help"] and "baselines" in helps["--help"]
    assert "ambiguous cue" in helps["generate"] and "(default: 0.2)" in helps["generate"]
    assert toy.main(["baselines", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'toy_meta.jsonl'}: no such file (is {tmp_path} a toy data directory?)\n"
    with pytest.raises(SystemExit) as info:
        toy.main(["generate", str(tmp_path), "--train", "many"])
    assert info.value.code == 2 and "--train: invalid int value: 'many'" in capsys.readouterr().err


def test_meta_lines_are_checked_with_file_and_line(tmp_path):
    from morelib.files import FileFormatError

    toy.meta_path(tmp_path).write_text('{"id": "train-1", "label": "none"}\n{"id": "train-2"}\n')
    with pytest.raises(FileFormatError, match=r"toy_meta\.jsonl:2: field 'label': missing"):
        toy.read_meta(tmp_path)


def test_default_dataset_validates_and_matches_the_more_format(default_data):
    report = validate(default_data)
    assert report.ok, report.problems[:5]
    assert json.loads((default_data / "rel2id.json").read_text()) == {r: i for i, r in enumerate(RELATIONS)}
    for split, target in (("train", 1500), ("valid", 300), ("test", 500)):
        summary = report.splits[split]
        assert target <= summary.facts < target + 16
        assert set(summary.label_counts) == set(RELATIONS), f"{split} lacks a label"
        assert summary.label_counts.most_common(1)[0][0] == NONE
        assert 0.6 <= summary.none_ratio <= 0.8
        assert summary.objects >= 2 * summary.images  # several objects, hence several facts per pair


def test_every_object_meets_every_named_entity(default_data):
    samples = load_split(default_data, "valid")
    ent_dict = load_entity_dict(default_data, "valid")
    facts_per_image = Counter(s.img_id for s in samples)
    entities_per_image = {}
    for s in samples:
        entities_per_image.setdefault(s.img_id, set()).add(s.entity_span)
    for img_id, n in facts_per_image.items():
        assert n == len(ent_dict[img_id]) * len(entities_per_image[img_id])


def test_meta_is_keyed_by_sample_id_and_agrees_with_the_lines(default_data):
    meta = toy.meta_by_id(default_data)
    for split in ("train", "test"):
        for s in load_split(default_data, split):
            row = meta[s.id]
            assert (row["label"], row["entity"], row["object"]["name"]) == (s.label, s.entity, s.object_name)
            assert s.label in candidates(row["object"]["type"], row["entity_type"])
            assert row["cue_words"] in s.text
            if not row["object_is_subject"]:
                assert s.label == NONE


def test_subject_is_drawn_solid_and_bystanders_hollow(default_data):
    meta = {row["id"]: row for row in toy.read_meta(default_data)["test"]}
    colourful = {"subject": [], "bystander": []}
    for s in load_split(default_data, "test")[:80]:
        full, crop = load_images(s)
        assert full.size == (toy.IMAGE_SIZE, toy.IMAGE_SIZE)
        pixels = list(crop.get_flattened_data())
        share = sum(max(p) - min(p) > 80 for p in pixels) / len(pixels)
        colourful[meta[s.id]["object"]["role"]].append(share)
    assert min(colourful["subject"]) > max(colourful["bystander"])


def test_both_modalities_are_needed(default_data):
    scores = toy.baselines(default_data)
    oracle = scores["both"]["f1"]
    assert 0.85 <= oracle < 1.0  # ambiguous wording leaves an irreducible error
    for side in ("text_only", "text_only_f1", "image_only", "image_only_f1"):
        assert scores[side]["f1"] < oracle - 0.3, side


def test_micro_metric_helper():
    s = toy._micro_scores(["none", "a", "b", "none"], ["a", "a", "none", "none"])
    assert s == {"acc": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert toy._micro_scores(["none"], ["none"]) == {"acc": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_cue_wordings_vary_the_headline_and_are_bounded(tmp_path):
    data_dir = toy.generate(tmp_path / "w4", toy.ToyConfig(seed=1, train=300, valid=20, test=20, cue_wordings=4))
    rows = [m for rows in toy.read_meta(data_dir).values() for m in rows]
    by_cue = {}
    for m in rows:
        cue = toy.CUE_BY_NAME[m["cue"]]
        assert tuple(m["cue_words"].split()) in cue.wordings  # one of the cue's own wordings
        by_cue.setdefault(m["cue"], set()).add(m["cue_words"])
    assert max(len(w) for w in by_cue.values()) > 1  # several wordings of one cue in one world
    with pytest.raises(ValueError, match="cue_wordings=5"):
        toy.ToyConfig(cue_wordings=5)
