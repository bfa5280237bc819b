"""The MORE data layer: loader variants, one specific error per malformed-line kind, crop, validator."""

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from morelib import data
from morelib.data import (
    BadValue, BoxOutOfRange, DataError, EmptyBox, EmptySplit, MissingField,
    SpanMismatch, UnknownLabel, UnparsableLine, box_to_pixels, crop_object, load_entity_dict, load_images,
    load_split, relations_for, validate,
)
from morelib.labels import RELATIONS

IMG = "0f1e2d3c-0000-4000-8000-000000000001.jpg"
TOKENS = ["Photo", ":", "Lena", "Ortiz", "joins", "Kestrel", "United"]


def line(**changes) -> dict:
    """A valid MORE line; keyword arguments replace top-level fields."""
    record = {
        "token": list(TOKENS),
        "h": {"name": "Kestrel United", "pos": [5, 7]},
        "t": {"name": "obj_0", "pos": [0.25, 0.5, 0.5, 0.5]},
        "img_id": IMG,
        "relation": "/per/org/member_of",
    }
    record.update(changes)
    return record


def make_dir(root: Path, lines: list, split: str = "train", objects=None, image=True) -> Path:
    """A one-split MORE directory; ``lines`` holds dicts (written with repr) or raw strings."""
    (root / "txt").mkdir(parents=True, exist_ok=True)
    text = "".join((raw if isinstance(raw, str) else repr(raw)) + "\n" for raw in lines)
    (root / "txt" / f"{split}.txt").write_text(text)
    (root / "img_org" / split).mkdir(parents=True, exist_ok=True)
    if image:
        Image.new("RGB", (40, 20), (200, 10, 10)).save(root / "img_org" / split / IMG)
    torch.save({IMG: objects if objects is not None else {"obj_0": [0.25, 0.5, 0.5, 0.5]}},
               root / f"ent_{split}_dict.pth")
    return root


def error_for(tmp_path, raw) -> DataError:
    make_dir(tmp_path, [line(), raw])
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "train")
    err = info.value
    assert (err.file, err.line) == (str(tmp_path / "txt" / "train.txt"), 2)
    assert str(err).startswith(f"{err.file}:2: {err.field}: ")
    return err


# ----------------------------------------------------------------------------- loading


def test_load_split_builds_the_sample(tmp_path):
    make_dir(tmp_path, [line()])
    (sample,) = load_split(tmp_path, "train")
    assert sample.id == "train-1" and sample.split == "train"
    assert sample.text == "Photo : Lena Ortiz joins Kestrel United"
    assert sample.tokens == tuple(TOKENS)
    assert (sample.entity, sample.entity_span) == ("Kestrel United", (5, 7))
    assert (sample.object_name, sample.box) == ("obj_0", (0.25, 0.5, 0.5, 0.5))
    assert sample.image_path == tmp_path / "img_org" / "train" / IMG
    assert sample.label == "/per/org/member_of"
    assert sample.data_dir == tmp_path


@pytest.mark.parametrize("lines, why", [([], "holds no sample lines"), (["", "   "], "holds no sample lines")])
def test_an_empty_split_is_an_error_naming_the_file(tmp_path, lines, why):
    make_dir(tmp_path, lines)
    with pytest.raises(EmptySplit, match=why) as info:
        load_split(tmp_path, "train")
    assert info.value.file == str(tmp_path / "txt" / "train.txt")


def test_a_split_of_invalid_lines_only_is_empty_too(tmp_path):
    make_dir(tmp_path, [line(relation="bogus"), "not a dict"])
    report = []
    with pytest.raises(EmptySplit, match="all 2 lines are invalid"):
        load_split(tmp_path, "train", skip_invalid=True, report=report)
    assert [type(p).__name__ for p in report] == ["UnknownLabel", "UnparsableLine"]


def test_loader_accepts_box_key_string_coordinates_and_token_list_names(tmp_path):
    variant = line(h={"name": ["Kestrel", "United"], "pos": [5, 7]},
                   t={"name": ["obj", "0"], "box": ["0.25", "0.5", "0.5", "0.5"]})
    one_string = line(t={"name": "obj_0", "pos": "0.25, 0.5, 0.5, 0.5"})
    make_dir(tmp_path, [variant, one_string])
    first, second = load_split(tmp_path, "train")
    assert first.entity == "Kestrel United" and first.object_name == "obj 0"
    assert first.box == second.box == (0.25, 0.5, 0.5, 0.5)


def test_entity_name_tolerates_whitespace_and_case(tmp_path):
    make_dir(tmp_path, [line(h={"name": " kestrel  UNITED", "pos": [5, 7]})])
    assert load_split(tmp_path, "train")[0].entity == " kestrel  UNITED"


def test_line_ids_count_physical_lines(tmp_path):
    make_dir(tmp_path, [line(), "", line()])
    assert [s.id for s in load_split(tmp_path, "train")] == ["train-1", "train-3"]


@pytest.mark.parametrize(
    "raw, kind, field",
    [
        ("{'token': ['a'], ", UnparsableLine, "line"),
        ("__import__('os').system('true')", UnparsableLine, "line"),
        ("['not', 'a', 'dict']", UnparsableLine, "line"),
        ({k: v for k, v in line().items() if k != "relation"}, MissingField, "relation"),
        ({k: v for k, v in line().items() if k != "img_id"}, MissingField, "img_id"),
        (line(t={"name": "obj_0"}), MissingField, "t.pos"),
        (line(h={"pos": [5, 7]}), MissingField, "h.name"),
        (line(token="Photo Lena"), BadValue, "token"),
        (line(relation="/per/org/founder"), UnknownLabel, "relation"),
        (line(h={"name": "Lena Ortiz", "pos": [5, 7]}), SpanMismatch, "h.name"),
        (line(h={"name": "Kestrel United", "pos": [5, 9]}), SpanMismatch, "h.pos"),
        (line(h={"name": "Kestrel United", "pos": "5:7"}), BadValue, "h.pos"),
        (line(t={"name": "obj_0", "pos": [0.2, 0.5, 0.5]}), BadValue, "t.pos"),
        (line(t={"name": "obj_0", "box": ["a", "0.5", "0.5", "0.5"]}), BadValue, "t.box"),
        (line(t={"name": "obj_0", "pos": [1.3, 0.5, 0.5, 0.5]}), BoxOutOfRange, "t.pos"),
        (line(t={"name": "obj_0", "pos": [0.5, 0.5, 0.0, 0.5]}), EmptyBox, "t.pos"),
        (line(t={"name": 7, "pos": [0.5, 0.5, 0.2, 0.5]}), BadValue, "t.name"),
    ],
)
def test_each_malformed_line_kind_has_its_own_error(tmp_path, raw, kind, field):
    err = error_for(tmp_path, raw)
    assert type(err) is kind
    assert err.field == field


def test_skip_invalid_reports_every_skipped_line(tmp_path, caplog):
    make_dir(tmp_path, [line(), line(relation="bogus"), "not python", line()])
    problems: list[DataError] = []
    with caplog.at_level(logging.WARNING, logger="morelib.data"):
        samples = load_split(tmp_path, "train", skip_invalid=True, report=problems)
    assert [s.id for s in samples] == ["train-1", "train-4"]
    assert [(type(p), p.line) for p in problems] == [(UnknownLabel, 2), (UnparsableLine, 3)]
    assert sum("skipped" in r.message for r in caplog.records) == 2


def test_relations_come_from_rel2id_when_present(tmp_path):
    make_dir(tmp_path, [line(relation="/per/org/founder")])
    (tmp_path / "rel2id.json").write_text(json.dumps({"none": 0, "/per/org/founder": 1}))
    assert relations_for(tmp_path) == ("none", "/per/org/founder")
    assert load_split(tmp_path, "train")[0].label == "/per/org/founder"
    (tmp_path / "rel2id.json").unlink()
    assert relations_for(tmp_path) == RELATIONS


def test_entity_dict_loads_with_weights_only(tmp_path):
    make_dir(tmp_path, [line()], objects={"obj_0": [0.1, 0.2, 0.3, 0.4], "obj_1": [0.5, 0.5, 0.1, 0.1]})
    assert load_entity_dict(tmp_path, "train") == {IMG: {"obj_0": [0.1, 0.2, 0.3, 0.4], "obj_1": [0.5, 0.5, 0.1, 0.1]}}


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_an_unsafe_pickle_is_refused_in_one_line_naming_the_file(tmp_path):
    make_dir(tmp_path, [line()])
    torch.save({IMG: _RunsCode()}, tmp_path / "ent_train_dict.pth")
    with pytest.raises(DataError) as error:
        load_entity_dict(tmp_path, "train")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'ent_train_dict.pth'}:0: file: refused to load: ")
    assert "\n" not in message and "weights_only" not in message
    (problem,) = [p for p in validate(tmp_path, splits=("train",)).problems if p.field == "file"]
    assert "refused to load" in str(problem)


# ----------------------------------------------------------------------------- crop


def test_box_to_pixels_maps_centre_box_to_corners():
    assert box_to_pixels([0.5, 0.5, 0.5, 0.5], 100, 40) == (25, 10, 75, 30)


def test_box_is_clamped_to_the_image():
    assert box_to_pixels([0.0, 1.0, 0.4, 0.4], 100, 100) == (0, 80, 20, 100)
    assert box_to_pixels([0.95, 0.5, 0.5, 2.0], 100, 100) == (70, 0, 100, 100)


def test_tiny_and_edge_boxes_still_give_one_pixel():
    left, top, right, bottom = box_to_pixels([1.0, 1.0, 0.001, 0.001], 50, 30)
    assert (right - left, bottom - top) == (1, 1)
    assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30


def test_crop_object_and_load_images(tmp_path):
    make_dir(tmp_path, [line()])
    (sample,) = load_split(tmp_path, "train")
    full, crop = load_images(sample)
    assert full.mode == crop.mode == "RGB"
    assert full.size == (40, 20) and crop.size == (20, 10)
    assert crop_object(full, [0.9, 0.9, 0.6, 0.6]).size == (16, 8)  # clamped at the right/bottom edges


# ----------------------------------------------------------------------------- validation


def test_validate_counts_labels_images_and_objects(tmp_path):
    make_dir(tmp_path, [line(), line(relation="none", t={"name": "obj_1", "pos": [0.7, 0.5, 0.2, 0.2]})],
             objects={"obj_0": [0.25, 0.5, 0.5, 0.5], "obj_1": [0.7, 0.5, 0.2, 0.2]})
    report = validate(tmp_path, splits=("train",))
    assert report.ok, report.problems
    summary = report.splits["train"]
    assert summary.label_counts == {"/per/org/member_of": 1, "none": 1}
    assert (summary.images, summary.objects, summary.dict_objects, summary.none_ratio) == (1, 2, 2, 0.5)


def test_validate_reports_missing_images_and_objects(tmp_path):
    make_dir(tmp_path, [line(), line(t={"name": "obj_9", "pos": [0.5, 0.5, 0.1, 0.1]})], image=False)
    report = validate(tmp_path, splits=("train",))
    kinds = sorted((type(p).__name__, p.line, p.field) for p in report.problems)
    assert kinds == [("MissingImage", 1, "img_id"), ("MissingImage", 2, "img_id"), ("MissingObject", 2, "t.name")]


def test_validate_refuses_a_file_that_is_not_an_image(tmp_path):
    make_dir(tmp_path, [line()])
    (image,) = (tmp_path / "img_org" / "train").iterdir()
    image.write_text("this is text, not a JPEG")
    (problem,) = validate(tmp_path, splits=("train",)).problems
    assert (type(problem).__name__, problem.line, problem.field) == ("MissingImage", 1, "img_id")
    assert f"{image}: not a readable image" in str(problem)


def test_validate_checks_boxes_in_the_entity_dict(tmp_path):
    make_dir(tmp_path, [line()], objects={"obj_0": [0.25, 0.5, 0.5, 0.5], "obj_1": [0.5, 0.5, 0.0, 0.1]})
    (problem,) = validate(tmp_path, splits=("train",)).problems
    assert type(problem) is EmptyBox
    assert (Path(problem.file).name, problem.field) == ("ent_train_dict.pth", f"{IMG}/obj_1")


def test_validate_reports_a_missing_split_file(tmp_path):
    make_dir(tmp_path, [line()])
    report = validate(tmp_path)
    assert {(p.field, Path(p.file).name) for p in report.problems} == {("file", "valid.txt"), ("file", "test.txt")}


def test_validate_refuses_an_empty_split(tmp_path):
    make_dir(tmp_path, [line()])
    for split in ("valid", "test"):
        make_dir(tmp_path, [line()] if split == "valid" else [], split=split)
    report = validate(tmp_path)
    assert [(type(p).__name__, Path(p.file).name) for p in report.problems] == [("EmptySplit", "test.txt")]


def test_cli_refuses_an_empty_split_naming_the_file(tmp_path, capsys):
    for split in ("train", "valid", "test"):
        make_dir(tmp_path, [] if split == "train" else [line()], split=split)
    assert data.main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: 1 problem(s)")
    assert f"{tmp_path / 'txt' / 'train.txt'}:0: file: no facts in the train split" in err[0]


def test_cli_help_and_one_line_errors(tmp_path, capsys):
    for argv in (["--help"], ["validate", "--help"]):
        with pytest.raises(SystemExit) as info:
            data.main(argv)
        assert info.value.code == 0
    assert "--splits" in capsys.readouterr().out
    assert data.main(["validate", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such data directory\n"
    with pytest.raises(SystemExit) as info:
        data.main(["check", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: python -m morelib.data: argument COMMAND: invalid choice")


def test_cli_exits_nonzero_and_names_file_line_field(tmp_path, capsys):
    for split in ("train", "valid", "test"):
        make_dir(tmp_path, [line(), line(relation="bogus"), line(t={"name": "obj_0", "pos": [0.5, 0.5, 0.5, -1]})],
                 split=split)
    assert data.main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'txt' / 'valid.txt'}:2: relation: unknown label 'bogus'" in out
    assert f"{tmp_path / 'txt' / 'test.txt'}:3: t.pos: empty box" in out
    assert "/per/org/member_of" in out and "none ratio" in out


def test_console_scripts_point_at_command_lines_with_help(capsys):
    import importlib
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("morelib-data", "morelib-toy", "morelib-tiny", "morelib-inference"):
        module, function = scripts[name].split(":")
        with pytest.raises(SystemExit) as info:
            getattr(importlib.import_module(module), function)(["--help"])
        assert info.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: python -m {module}"), name
