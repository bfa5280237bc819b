"""The MORE on-disk format: one `Sample` per line of ``txt/{split}.txt``, images, crops, validation.

Layout of a MORE release (and of the toy world)::

    DATA_DIR/txt/{train,valid,test}.txt      one Python dict literal per line
    DATA_DIR/img_org/{split}/<uuid>.jpg
    DATA_DIR/ent_{split}_dict.pth            img_id -> {object_name: [cx, cy, w, h]}
    DATA_DIR/rel2id.json, caption_dict.json  (optional)

A line looks like ``{'token': [...], 'h': {'name': ..., 'pos': [start, end]},
't': {'name': ..., 'pos': [cx, cy, w, h]}, 'img_id': '<uuid>.jpg', 'relation': ...}``.
Accepted variants: ``t.box`` instead of ``t.pos``, coordinates as strings, names as token lists.

Every bad line raises a `DataError` subclass naming file, line and field; with
``skip_invalid=True`` the line is skipped, logged and collected, never dropped silently. A
split without a single fact is an error too (`EmptySplit`): nothing downstream can use it.

    python -m morelib.data validate DATA_DIR
"""

from __future__ import annotations

import ast
import logging
import math
import pickle
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from morelib.labels import NONE, RELATIONS, load_rel2id

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Sample:
    id: str                # f"{split}-{line_no}", line_no = 1-based line in txt/{split}.txt
    split: str             # "train" | "valid" | "test"
    text: str              # " ".join(tokens)
    tokens: tuple[str, ...]
    entity: str            # h.name as one string
    entity_span: tuple[int, int]   # h.pos, token span [start, end)
    object_name: str       # t.name as one string
    box: tuple[float, float, float, float]   # t.pos (or t.box): cx, cy, w, h in [0, 1]
    img_id: str            # "<uuid>.jpg"
    image_path: Path       # DATA_DIR/img_org/{split}/{img_id}
    label: str             # one of the relations

    @property
    def data_dir(self) -> Path:
        """The MORE-layout directory the sample was read from."""
        return self.image_path.parents[2]


# ----------------------------------------------------------------------------- errors


class DataError(ValueError):
    """A problem in a data file, located by file, line (1-based; 0 = the whole file) and field."""

    kind = "invalid"

    def __init__(self, file: str | Path, line: int, field: str, message: str):
        self.file, self.line, self.field, self.message = str(file), line, field, message
        super().__init__(f"{self.file}:{line}: {field}: {message}")


class UnparsableLine(DataError):
    kind = "unparsable"


class MissingField(DataError):
    kind = "missing_field"


class BadValue(DataError):
    """A field of the wrong type or shape (tokens not a list of strings, span not two ints...)."""

    kind = "bad_value"


class UnknownLabel(DataError):
    kind = "unknown_label"


class SpanMismatch(DataError):
    kind = "span_mismatch"


class BoxOutOfRange(DataError):
    kind = "box_out_of_range"


class EmptyBox(DataError):
    kind = "empty_box"


class MissingImage(DataError):
    kind = "missing_image"


class MissingObject(DataError):
    kind = "missing_object"


class MissingFile(DataError):
    kind = "missing_file"


class EmptySplit(DataError):
    """A split file without a single usable fact."""

    kind = "empty_split"


# ----------------------------------------------------------------------------- parsing


def relations_for(data_dir: str | Path) -> tuple[str, ...]:
    """The label set: the release's rel2id.json when present, else the 21 MORE labels."""
    path = Path(data_dir) / "rel2id.json"
    return load_rel2id(path) if path.exists() else RELATIONS


def _name(value, file, line_no, field_name) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    raise BadValue(file, line_no, field_name, f"expected a string or a list of strings, got {value!r}")


def _squash(text: str) -> str:
    """Compare entity names ignoring whitespace and case (tokenisation may split punctuation)."""
    return "".join(text.split()).lower()


def _box(value, file, line_no, field_name) -> tuple[float, float, float, float]:
    if isinstance(value, str):  # one string "cx, cy, w, h" or "[cx cy w h]"
        value = value.strip("[]() ").replace(",", " ").split()
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise BadValue(file, line_no, field_name, f"expected 4 numbers [cx, cy, w, h], got {value!r}")
    try:
        cx, cy, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BadValue(file, line_no, field_name, f"coordinates are not numbers: {value!r}") from None
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        raise BoxOutOfRange(file, line_no, field_name, f"non-finite coordinates {value!r}")
    if w <= 0 or h <= 0:
        raise EmptyBox(file, line_no, field_name, f"empty box: width {w}, height {h}")
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
        raise BoxOutOfRange(file, line_no, field_name, f"coordinates outside [0, 1]: {[cx, cy, w, h]}")
    return cx, cy, w, h


def _get(record: dict, key: str, file, line_no, prefix: str = ""):
    if key not in record:
        raise MissingField(file, line_no, prefix + key, "missing")
    return record[key]


def parse_line(raw: str, *, file: Path, line_no: int, split: str, data_dir: Path,
               relations: tuple[str, ...]) -> Sample:
    """One txt line -> Sample, or a DataError naming the first problem found."""
    try:
        record = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise UnparsableLine(file, line_no, "line", f"not a Python dict literal ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise UnparsableLine(file, line_no, "line", f"expected a dict, got {type(record).__name__}")

    tokens = _get(record, "token", file, line_no)
    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise BadValue(file, line_no, "token", "expected a non-empty list of strings")
    tokens = tuple(tokens)

    label = _get(record, "relation", file, line_no)
    if label not in relations:
        raise UnknownLabel(file, line_no, "relation", f"unknown label {label!r}")

    head = _get(record, "h", file, line_no)
    if not isinstance(head, dict):
        raise BadValue(file, line_no, "h", f"expected a dict, got {type(head).__name__}")
    entity = _name(_get(head, "name", file, line_no, "h."), file, line_no, "h.name")
    span = _get(head, "pos", file, line_no, "h.")
    if (not isinstance(span, (list, tuple)) or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
        raise BadValue(file, line_no, "h.pos", f"expected [start, end] token indices, got {span!r}")
    start, end = span
    if not 0 <= start < end <= len(tokens):
        raise SpanMismatch(file, line_no, "h.pos", f"span {[start, end]} outside the {len(tokens)} tokens")
    in_text = " ".join(tokens[start:end])
    if _squash(in_text) != _squash(entity):
        raise SpanMismatch(file, line_no, "h.name", f"{entity!r} but tokens[{start}:{end}] are {in_text!r}")

    tail = _get(record, "t", file, line_no)
    if not isinstance(tail, dict):
        raise BadValue(file, line_no, "t", f"expected a dict, got {type(tail).__name__}")
    object_name = _name(_get(tail, "name", file, line_no, "t."), file, line_no, "t.name")
    box_key = "pos" if "pos" in tail else "box" if "box" in tail else None
    if box_key is None:
        raise MissingField(file, line_no, "t.pos", "missing (neither t.pos nor t.box)")
    box = _box(tail[box_key], file, line_no, f"t.{box_key}")

    img_id = _get(record, "img_id", file, line_no)
    if not isinstance(img_id, str) or not img_id.strip():
        raise BadValue(file, line_no, "img_id", f"expected a file name, got {img_id!r}")

    return Sample(
        id=f"{split}-{line_no}", split=split, text=" ".join(tokens), tokens=tokens, entity=entity,
        entity_span=(start, end), object_name=object_name, box=box, img_id=img_id,
        image_path=data_dir / "img_org" / split / img_id, label=label,
    )


def load_split(data_dir: str | Path, split: str, skip_invalid: bool = False,
               relations: tuple[str, ...] | None = None,
               report: list[DataError] | None = None) -> list[Sample]:
    """All samples of ``txt/{split}.txt``, in file order.

    skip_invalid: False raises the first DataError; True skips bad lines, logging each one
        and appending it to ``report`` (pass a list to collect them).
    relations: the label set; default `relations_for(data_dir)`.
    Blank lines carry no fact and are passed over (line numbers still count them). A split
    with no fact left is an `EmptySplit` error.
    """
    data_dir = Path(data_dir)
    relations = relations or relations_for(data_dir)
    path = data_dir / "txt" / f"{split}.txt"
    if not path.exists():
        raise MissingFile(path, 0, "file", "missing")
    samples = []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                samples.append(parse_line(raw, file=path, line_no=line_no, split=split,
                                          data_dir=data_dir, relations=relations))
            except DataError as err:
                if not skip_invalid:
                    raise
                skipped += 1
                log.warning("skipped %s", err)
                if report is not None:
                    report.append(err)
    if not samples:
        why = f"all {skipped} lines are invalid" if skipped else "the file holds no sample lines"
        raise EmptySplit(path, 0, "file", f"no facts in the {split} split ({why})")
    return samples


def load_entity_dict(data_dir: str | Path, split: str) -> dict[str, dict[str, list[float]]]:
    """``ent_{split}_dict.pth``: img_id -> {object_name: [cx, cy, w, h]} (a pickle: weights_only)."""
    import torch

    path = Path(data_dir) / f"ent_{split}_dict.pth"
    if not path.exists():
        raise MissingFile(path, 0, "file", "missing")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is seven lines and suggests weights_only=False (running the file's code): keep its reason.
        reason = next((line.strip() for line in str(error).splitlines() if line.strip().startswith(
            ("Trying to load", "Unsupported", "Unsupported operand"))), "it holds objects other than plain data")
        raise BadValue(path, 0, "file", f"refused to load: {reason} (only tensors, numbers, strings, lists and "
                                        "dicts are read; a pickle is never run)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise BadValue(path, 0, "file", f"cannot load ({type(error).__name__}: "
                                        f"{' '.join(str(error).split())[:200]})") from None


# ----------------------------------------------------------------------------- images


def box_to_pixels(box, width: int, height: int) -> tuple[int, int, int, int]:
    """[cx, cy, w, h] (normalised) -> (left, top, right, bottom) pixels, clamped, at least 1 px."""
    cx, cy, w, h = (float(v) for v in box)

    def side(centre, extent, size):
        lo = min(max(round((centre - extent / 2) * size), 0), size - 1)
        hi = min(max(round((centre + extent / 2) * size), lo + 1), size)
        return lo, hi

    left, right = side(cx, w, width)
    top, bottom = side(cy, h, height)
    return left, top, right, bottom


def crop_object(image, box):
    """The object's crop of a PIL image, clamped to the image."""
    return image.crop(box_to_pixels(box, *image.size))


def load_images(sample: Sample):
    """(full image, object crop), both RGB PIL images."""
    from PIL import Image

    with Image.open(sample.image_path) as img:
        full = img.convert("RGB")
    return full, crop_object(full, sample.box)


# ----------------------------------------------------------------------------- validation


@dataclass
class SplitSummary:
    label_counts: Counter = field(default_factory=Counter)
    images: int = 0        # distinct images referenced by the split's lines
    objects: int = 0       # distinct (image, object) pairs referenced by the split's lines
    dict_objects: int = 0  # objects listed in ent_{split}_dict.pth

    @property
    def facts(self) -> int:
        return sum(self.label_counts.values())

    @property
    def none_ratio(self) -> float:
        return self.label_counts[NONE] / self.facts if self.facts else 0.0


@dataclass
class ValidationReport:
    relations: tuple[str, ...]
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[DataError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> ValidationReport:
    """Check every split; collects every problem instead of stopping at the first."""
    data_dir = Path(data_dir)
    problems: list[DataError] = []
    try:
        relations = relations_for(data_dir)
    except (ValueError, OSError) as exc:
        problems.append(BadValue(data_dir / "rel2id.json", 0, "file", str(exc)))
        relations = RELATIONS
    report = ValidationReport(relations=relations, problems=problems)
    for split in splits:
        summary = report.splits[split] = SplitSummary()
        try:
            samples = load_split(data_dir, split, skip_invalid=True, relations=relations, report=problems)
        except DataError as err:
            problems.append(err)
            continue
        try:
            ent_dict = load_entity_dict(data_dir, split)
        except DataError as err:
            problems.append(err)
            ent_dict = None
        except Exception as exc:  # a corrupt or unsafe pickle: report, keep checking the rest
            problems.append(BadValue(data_dir / f"ent_{split}_dict.pth", 0, "file", f"cannot load: {exc}"))
            ent_dict = None
        txt = data_dir / "txt" / f"{split}.txt"
        summary.label_counts.update(s.label for s in samples)
        summary.images = len({s.img_id for s in samples})
        summary.objects = len({(s.img_id, s.object_name) for s in samples})
        if isinstance(ent_dict, dict):
            summary.dict_objects = sum(len(v) for v in ent_dict.values() if isinstance(v, dict))
            problems.extend(_check_entity_boxes(ent_dict, data_dir / f"ent_{split}_dict.pth"))
        image_problem: dict[str, str | None] = {}
        for s in samples:
            line_no = int(s.id.rsplit("-", 1)[1])
            if s.img_id not in image_problem:
                image_problem[s.img_id] = _image_problem(s.image_path)
            if image_problem[s.img_id] is not None:
                problems.append(MissingImage(txt, line_no, "img_id", image_problem[s.img_id]))
            if ent_dict is not None:
                objects = ent_dict.get(s.img_id)
                if not isinstance(objects, dict) or s.object_name not in objects:
                    where = "image not in" if not isinstance(objects, dict) else "object not in"
                    problems.append(MissingObject(txt, line_no, "t.name",
                                                  f"{s.object_name!r}: {where} ent_{split}_dict.pth"))
    return report


def _image_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable image (missing, or not an image file: PIL checks its header
    and structure), or None."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return f"no image {path}"
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{path}: not a readable image ({type(exc).__name__}: {exc})"
    return None


def _check_entity_boxes(ent_dict: dict, path: Path) -> list[DataError]:
    """Boxes in the entity dict (no line numbers there: the field names image and object)."""
    problems = []
    for img_id, objects in ent_dict.items():
        if not isinstance(objects, dict):
            problems.append(BadValue(path, 0, str(img_id), "expected {object_name: [cx, cy, w, h]}"))
            continue
        for name, box in objects.items():
            try:
                _box(box.tolist() if hasattr(box, "tolist") else box, path, 0, f"{img_id}/{name}")
            except DataError as err:
                problems.append(err)
    return problems


def format_report(report: ValidationReport) -> str:
    splits = list(report.splits)
    width = max(len(r) for r in report.relations) + 2
    lines = [f"{'label':<{width}}" + "".join(f"{s:>8}" for s in splits)]
    for label in report.relations:
        lines.append(f"{label:<{width}}" + "".join(f"{report.splits[s].label_counts[label]:>8}" for s in splits))
    rows = [
        ("facts", lambda s: f"{s.facts:>8}"),
        ("none ratio", lambda s: f"{s.none_ratio:>8.1%}"),
        ("labels present", lambda s: f"{sum(1 for v in s.label_counts.values() if v):>8}"),
        ("images", lambda s: f"{s.images:>8}"),
        ("objects (in lines)", lambda s: f"{s.objects:>8}"),
        ("objects (ent dict)", lambda s: f"{s.dict_objects:>8}"),
    ]
    lines.append("-" * (width + 8 * len(splits)))
    for name, fmt in rows:
        lines.append(f"{name:<{width}}" + "".join(fmt(report.splits[s]) for s in splits))
    if report.problems:
        lines.append(f"\n{len(report.problems)} problem(s):")
        lines.extend(f"  {p}" for p in report.problems)
    else:
        lines.append("\nno problems found")
    return "\n".join(lines)


def _validate_command(args) -> int:
    data_dir = Path(args.data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    logging.basicConfig(level=logging.ERROR)  # problems are listed in the report itself
    report = validate(data_dir, tuple(args.splits))
    print(format_report(report))
    if not report.ok:
        print(f"error: {data_dir}: {len(report.problems)} problem(s), the first: {report.problems[0]}",
              file=sys.stderr)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m morelib.data validate DATA_DIR``: check a MORE-format data directory."""
    from morelib import cli

    parser = cli.make_parser("python -m morelib.data", "The MORE data format: check a data directory.")
    commands = cli.add_commands(parser)
    check = cli.add_command(commands, "validate", "check every split of a MORE-format data directory: "
                            "lines, labels, entity spans, boxes, images, entity dicts; an empty split is an error")
    check.add_argument("data_dir", help="the directory holding txt/, img_org/ and ent_{split}_dict.pth")
    check.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="the splits to check")
    return cli.run(parser, argv, _validate_command)


if __name__ == "__main__":
    sys.exit(main())
