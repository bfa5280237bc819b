"""The toy world: a small synthetic MORE dataset, written in the exact MORE release layout.

Each image-text pair is a drawn image (2-4 simple shapes on a light background) and a
news-like headline about the image's *subject* that names one or two entities. The object
type shows in colour and shape (per = red circle, org = blue square, loc = green triangle,
misc = orange diamond); the subject is drawn solid, bystanders as hollow outlines. Every
object x every named entity is one fact (one line), as in MORE:

- subject x entity -> the relation the headline's cue words give *for the subject's type*
  (the same cue can mean different relations for different object types, and none for some);
- bystander x entity -> none.

So the label needs the text (which cue, which entity type) and the image (is this object the
subject, and of which type). A few cues are ambiguous between two relations of one type pair,
which leaves an irreducible error. The facts behind each line go to ``toy_meta.jsonl``, read
only by the offline expert.

    python -m morelib.toy generate DATA_DIR --seed 0 [--train 1500 --valid 300 --test 500]
    python -m morelib.toy baselines DATA_DIR
"""

from __future__ import annotations

import io
import json
import random
import shutil
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morelib.files import read_jsonl, write_json, write_text
from morelib.labels import NONE, RELATIONS, REL2ID

IMAGE_SIZE = 112
BACKGROUND = (244, 242, 236)
JPEG_QUALITY = 95
SPLITS = ("train", "valid", "test")
META_FILE = "toy_meta.jsonl"  # in the data directory, beside txt/: the facts behind each line
CONFIG_FILE = "toy_config.json"  # beside it: the ToyConfig that wrote the world

# How each entity type looks in the image.
LOOKS = {
    "per": {"colour": "red", "rgb": (206, 40, 40), "shape": "circle"},
    "org": {"colour": "blue", "rgb": (40, 70, 200), "shape": "square"},
    "loc": {"colour": "green", "rgb": (30, 150, 60), "shape": "triangle"},
    "misc": {"colour": "orange", "rgb": (235, 150, 20), "shape": "diamond"},
}

# Invented names whose form reveals the entity type.
FIRST = ["Lena", "Omar", "Ines", "Tomas", "Rhea", "Milo", "Sana", "Pavel", "Nora", "Elio", "Kira", "Dario"]
LAST = ["Ortiz", "Brandt", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Castell", "Novak", "Reyes", "Halden"]
ORG_HEAD = ["Kestrel", "Varo", "Norden", "Altis", "Brightwell", "Corvan", "Helix", "Ostrava"]
ORG_TAIL = ["United", "Corp", "Group", "Bank", "Motors", "Labs"]
LOC_HEAD = ["Port", "Mount", "Lake", "North", "San"]
LOC_TAIL = ["Selen", "Adra", "Vireo", "Calder", "Mirel", "Tasso", "Ebon", "Luma"]
MISC = {  # misc entities come in kinds; a cue names the kind it fits
    "award": [["Golden", "Lyre", "Award"], ["Silver", "Oak", "Prize"], ["Blue", "Star", "Medal"]],
    "party": [["Green", "Party"], ["Unity", "Party"], ["Liberty", "Party"]],
    "nation": [["Velan"], ["Sorran"], ["Adrian"]],
    "event": [["Harbour", "Games"], ["Summer", "Expo"], ["Winter", "Cup"]],
}

# Nouns for the subject: by type, or generic (its type must then come from the image).
NOUNS = {
    "per": ["striker", "singer", "senator", "coach", "actor"],
    "org": ["firm", "club", "bank", "agency"],
    "loc": ["city", "valley", "harbour", "island"],
    "misc": ["trophy", "flag", "banner", "medal"],
}
GENERIC_NOUNS = ["newcomer", "favourite", "one pictured"]
OPENERS = [[], ["Photo", ":"], ["Today", ":"], ["Report", ":"]]


@dataclass(frozen=True)
class Cue:
    """A headline wording linking the subject to an entity of type ``ent_type``.

    ``labels`` maps the subject's type to the relation(s) the cue means; a type not listed
    means none. Two relations for one type make the cue ambiguous (chosen at random).
    """

    name: str
    ent_type: str
    words: tuple[str, ...]
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    misc_kinds: tuple[str, ...] = tuple(MISC)  # which misc names fit the wording
    wordings: tuple[tuple[str, ...], ...] = ()  # every way a headline says it; the first is ``words``


def _cue(name, ent_type, words, misc="", **labels):
    kinds = tuple(misc.split()) or tuple(MISC)
    wordings = tuple(tuple(w.split()) for w in [words, *WORDINGS.get(name, ())])
    return Cue(name, ent_type, wordings[0], {k: tuple(v.split()) for k, v in labels.items()}, kinds, wordings)


# Further wordings of each cue (``ToyConfig.cue_wordings`` says how many a world uses). A headline
# draws one at random, so with several of them the expert's 25% sees some wordings of a relation
# once or never, while the Stage 2 pool, three times larger, holds them all: a label decision
# that the answer reward can teach. The pretraining corpus uses the same wordings, without their meaning.
WORDINGS = {
    "rival": ["takes on", "battles", "clashes with"],
    "partner": ["joins forces with", "partners with", "works alongside"],
    "sibling": ["is the brother of", "is a cousin of", "is the daughter of"],
    "alias_per": ["goes by", "is nicknamed", "performs as"],
    "with_per": ["spotted with", "pictured beside", "is out with"],
    "meets": ["greets", "talks to", "calls on"],
    "praised": ["thanked by", "cheered by", "hailed by"],
    "protests": ["rallies against", "sues", "boycotts"],
    "leads": ["heads", "chairs", "takes charge of"],
    "joins": ["signs with", "enters", "becomes part of"],
    "alias_org": ["trades as", "is better known as", "is short for"],
    "backs": ["supports", "stands by", "funds"],
    "deal": ["buys from", "sells to", "bargains with"],
    "born": ["is a native of", "was raised from birth in", "entered the world in"],
    "based": ["lives in", "resides in", "is settled in"],
    "governs": ["is mayor of", "rules", "administers"],
    "home_to": ["contains", "includes", "surrounds"],
    "from_loc": ["comes from", "is from", "returns to"],
    "tours": ["travels to", "passes through", "leaves"],
    "at": ["competes at", "appears at", "takes part in"],
    "wins": ["receives", "is awarded", "claims"],
    "runs_for": ["stands for", "campaigns for", "is a candidate of"],
    "national": ["holds a passport of", "is a national of", "is a subject of"],
    "president": ["now presides over", "is elected head of", "becomes president of"],
    "praises": ["applauds", "welcomes", "salutes"],
}


CUES: tuple[Cue, ...] = (
    # entity: person
    _cue("rival", "per", "faces rival", per="/per/per/opponent"),
    _cue("partner", "per", "teams up with", per="/per/per/partner"),
    _cue("sibling", "per", "is the sister of", per="/per/per/relatives"),
    _cue("alias_per", "per", "is also known as", per="/per/per/alternate_names"),
    _cue("with_per", "per", "seen with", per="/per/per/partner /per/per/relatives"),
    _cue("meets", "per", "meets", ),
    _cue("praised", "per", "praised by"),
    # entity: organisation
    _cue("protests", "org", "protests against", per="/per/org/opposed_to"),
    _cue("leads", "org", "now leads", per="/per/org/leader_of"),
    _cue("joins", "org", "joins", per="/per/org/member_of", org="/org/org/subsidiary"),
    _cue("alias_org", "org", "is also known as", org="/org/org/alternate_names"),
    _cue("backs", "org", "backs", per="/per/org/member_of /per/org/leader_of"),
    _cue("deal", "org", "signs deal with"),
    # entity: location
    _cue("born", "loc", "was born in", per="/per/loc/place_of_birth"),
    _cue("based", "loc", "is based in", per="/per/loc/place_of_residence", org="/org/loc/locate_at"),
    _cue("governs", "loc", "governs", per="/per/loc/place_of_governance"),
    _cue("home_to", "loc", "is home to", loc="/loc/loc/contain"),
    _cue("from_loc", "loc", "hails from", per="/per/loc/place_of_birth /per/loc/place_of_residence"),
    _cue("tours", "loc", "tours"),
    # entity: misc
    _cue("at", "misc", "shines at", "event", per="/per/misc/present_in", org="/org/misc/present_in"),
    _cue("wins", "misc", "wins", "award", per="/per/misc/awarded"),
    _cue("runs_for", "misc", "runs for", "party", per="/per/misc/party"),
    _cue("national", "misc", "is a citizen of", "nation", per="/per/misc/nationality"),
    _cue("president", "misc", "is named president of", "nation party", per="/per/misc/president"),
    _cue("praises", "misc", "praises"),
)
CUE_BY_NAME = {c.name: c for c in CUES}


@dataclass(frozen=True)
class ToyConfig:
    """Settings of the toy generator; the defaults make the dataset the notebooks use."""

    seed: int = field(default=0, metadata={"help": "random seed: the same seed writes byte-identical files"})
    train: int = field(default=1500, metadata={
        "help": "target number of train facts (lines); whole image-text pairs are kept, so a few more"})
    valid: int = field(default=300, metadata={"help": "target number of valid facts (lines)"})
    test: int = field(default=500, metadata={"help": "target number of test facts (lines)"})
    p_second_entity: float = field(default=0.45, metadata={"help": "chance that a headline names a second entity"})
    p_relation_plan: float = field(default=0.85, metadata={
        "help": "chance that the subject-entity pair is planned from a relation (else any cue)"})
    p_ambiguous: float = field(default=0.2, metadata={
        "help": "chance that a planned relation uses an ambiguous cue, when one exists"})
    p_generic_noun: float = field(default=0.7, metadata={"help": "chance that the headline hides the subject's type"})
    p_same_type_bystander: float = field(default=0.4, metadata={
        "help": "chance that a bystander has the subject's type (a hard case)"})
    object_counts: list[int] = field(default_factory=lambda: [2, 2, 3, 3, 4, 4], metadata={
        "help": "objects per image, drawn uniformly from this list"})
    cue_wordings: int = field(default=1, metadata={
        "help": "wordings per cue a headline draws from (1 to 4): more make the label a judgement that Stage 1's "
                "25% sees too rarely and the Stage 2 pool teaches"})

    def __post_init__(self):
        most = min(len(cue.wordings) for cue in CUES)
        if not 1 <= self.cue_wordings <= most:
            raise ValueError(f"cue_wordings={self.cue_wordings}: expected 1 to {most} (morelib.toy.WORDINGS)")


# ----------------------------------------------------------------------------- names


def entity_name(rng: random.Random, cue: Cue) -> list[str]:
    ent_type = cue.ent_type
    if ent_type == "per":
        return [rng.choice(FIRST), rng.choice(LAST)]
    if ent_type == "org":
        return [rng.choice(ORG_HEAD), rng.choice(ORG_TAIL)]
    if ent_type == "loc":
        return [rng.choice(LOC_HEAD), rng.choice(LOC_TAIL)]
    return list(rng.choice(MISC[rng.choice(cue.misc_kinds)]))


# ----------------------------------------------------------------------------- planning


def _cues_for(label: str) -> tuple[list[Cue], list[Cue]]:
    """(unambiguous, ambiguous) cues that can express ``label``."""
    obj_type = label.split("/")[1]
    plain, ambiguous = [], []
    for c in CUES:
        options = c.labels.get(obj_type, ())
        if label in options:
            (plain if len(options) == 1 else ambiguous).append(c)
    return plain, ambiguous


def _cue_label(rng: random.Random, cue: Cue, subject_type: str) -> str:
    options = cue.labels.get(subject_type, ())
    return rng.choice(options) if options else NONE


class _LabelCycle:
    """Draws relations round-robin from shuffled decks, so every label appears in every split."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.deck: list[str] = []

    def next(self) -> str:
        if not self.deck:
            self.deck = list(RELATIONS[1:])
            self.rng.shuffle(self.deck)
        return self.deck.pop()


def plan_pair(rng: random.Random, cfg: ToyConfig, cycle: _LabelCycle) -> dict:
    """One image-text pair: subject type, 1-2 (cue, entity, label) links, objects."""
    if rng.random() < cfg.p_relation_plan:
        label = cycle.next()
        subject_type = label.split("/")[1]
        plain, ambiguous = _cues_for(label)
        cue = rng.choice(ambiguous) if ambiguous and rng.random() < cfg.p_ambiguous else rng.choice(plain)
    else:
        subject_type = rng.choice(["per", "per", "org", "loc", "misc"])
        cue = rng.choice(CUES)
        label = None
    links = [_link(rng, cue, subject_type, label, cfg.cue_wordings)]
    if rng.random() < cfg.p_second_entity:
        second = rng.choice([c for c in CUES if c is not cue])
        links.append(_link(rng, second, subject_type, None, cfg.cue_wordings))
    names = [" ".join(link["entity"]) for link in links]
    if len(set(names)) < len(names):  # same name drawn twice: keep one entity
        links = links[:1]

    n_objects = rng.choice(cfg.object_counts)
    types = [subject_type]
    for _ in range(n_objects - 1):
        same = rng.random() < cfg.p_same_type_bystander
        types.append(subject_type if same else rng.choice(list(LOOKS)))
    rng.shuffle(types)
    subject_index = types.index(subject_type)
    noun = rng.choice(GENERIC_NOUNS) if rng.random() < cfg.p_generic_noun else rng.choice(NOUNS[subject_type])
    return {"subject_type": subject_type, "links": links, "types": types,
            "subject_index": subject_index, "noun": noun, "opener": rng.choice(OPENERS)}


def _link(rng: random.Random, cue: Cue, subject_type: str, label: str | None, wordings: int = 1) -> dict:
    if label is None:
        label = _cue_label(rng, cue, subject_type)
    link = {"cue": cue.name, "ent_type": cue.ent_type, "entity": entity_name(rng, cue),
            "label": label, "ambiguous": len(cue.labels.get(subject_type, ())) > 1, "words": list(cue.words)}
    if wordings > 1:  # drawn only then, so that a one-wording world stays byte-identical to earlier versions
        link["words"] = list(cue.wordings[rng.randrange(min(wordings, len(cue.wordings)))])
    return link


def headline(plan: dict) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of the headline and each entity's token span [start, end)."""
    tokens = list(plan["opener"]) + ["The"] + plan["noun"].split()
    spans = []
    for i, link in enumerate(plan["links"]):
        if i:
            tokens.append("and")
        tokens.extend(link["words"])
        start = len(tokens)
        tokens.extend(link["entity"])
        spans.append((start, len(tokens)))
    return tokens, spans


# ----------------------------------------------------------------------------- drawing


def place_objects(rng: random.Random, n: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping pixel boxes (left, top, right, bottom) for n shapes, 3 px apart."""
    for _layout in range(1000):  # a crowded layout can dead-end: start it again
        boxes: list[tuple[int, int, int, int]] = []
        for _attempt in range(50 * n):
            size = rng.randint(24, 40)
            left = rng.randint(2, IMAGE_SIZE - size - 2)
            top = rng.randint(2, IMAGE_SIZE - size - 2)
            box = (left, top, left + size, top + size)
            if all(box[2] + 3 <= b[0] or b[2] + 3 <= box[0] or box[3] + 3 <= b[1] or b[3] + 3 <= box[1]
                   for b in boxes):
                boxes.append(box)
                if len(boxes) == n:
                    return boxes
    raise RuntimeError(f"could not place {n} objects on a {IMAGE_SIZE}px image")


def draw_image(types: list[str], boxes: list[tuple[int, int, int, int]], subject_index: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, (obj_type, (l, t, r, b)) in enumerate(zip(types, boxes)):
        look = LOOKS[obj_type]
        fill = look["rgb"] if i == subject_index else None
        r_, b_ = r - 1, b - 1
        shape = look["shape"]
        if shape == "circle":
            draw.ellipse((l, t, r_, b_), fill=fill, outline=look["rgb"], width=3)
        elif shape == "square":
            draw.rectangle((l, t, r_, b_), fill=fill, outline=look["rgb"], width=3)
        elif shape == "triangle":
            pts = [((l + r_) // 2, t), (r_, b_), (l, b_)]
            draw.polygon(pts, fill=fill, outline=look["rgb"], width=3)
        else:
            cx, cy = (l + r_) // 2, (t + b_) // 2
            pts = [(cx, t), (r_, cy), (cx, b_), (l, cy)]
            draw.polygon(pts, fill=fill, outline=look["rgb"], width=3)
    return image


def _position_word(box: tuple[int, int, int, int]) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    row = "top" if cy < IMAGE_SIZE / 3 else "bottom" if cy > 2 * IMAGE_SIZE / 3 else "middle"
    col = "left" if cx < IMAGE_SIZE / 3 else "right" if cx > 2 * IMAGE_SIZE / 3 else "centre"
    return f"{row} {col}"


def describe(obj_type: str, solid: bool) -> str:
    look = LOOKS[obj_type]
    return f"a {'solid' if solid else 'hollow'} {look['colour']} {look['shape']}"


# ----------------------------------------------------------------------------- writing


def _jpeg_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def generate_split(rng: random.Random, cfg: ToyConfig, split: str, n_facts: int, data_dir: Path):
    """Draw pairs until the split holds about n_facts lines; returns (lines, meta, ent_dict, captions)."""
    cycle = _LabelCycle(rng)
    lines, meta, ent_dict, captions = [], [], {}, {}
    image_dir = data_dir / "img_org" / split
    if image_dir.exists():  # a rerun must not leave images of an earlier dataset behind
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    while len(lines) < n_facts:
        plan = plan_pair(rng, cfg, cycle)
        tokens, spans = headline(plan)
        boxes = place_objects(rng, len(plan["types"]))
        img_id = f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.jpg"
        image = draw_image(plan["types"], boxes, plan["subject_index"])
        (image_dir / img_id).write_bytes(_jpeg_bytes(image))

        objects = {}
        descriptions = []
        for i, (obj_type, box) in enumerate(zip(plan["types"], boxes)):
            name = f"obj_{i}"  # neutral names: the type must come from the pixels
            l, t, r, b = box
            objects[name] = [round((l + r) / 2 / IMAGE_SIZE, 4), round((t + b) / 2 / IMAGE_SIZE, 4),
                             round((r - l) / IMAGE_SIZE, 4), round((b - t) / IMAGE_SIZE, 4)]
            descriptions.append(f"{describe(obj_type, i == plan['subject_index'])} at the {_position_word(box)}")
        ent_dict[img_id] = objects
        captions[img_id] = {n: describe(t, i == plan["subject_index"]) for i, (n, t) in
                            enumerate(zip(objects, plan["types"]))}
        image_text = f"A light background with {len(boxes)} shapes: " + "; ".join(descriptions) + "."

        for link, (start, end) in zip(plan["links"], spans):
            for i, (name, obj_type) in enumerate(zip(objects, plan["types"])):
                is_subject = i == plan["subject_index"]
                label = link["label"] if is_subject else NONE
                line = {
                    "token": tokens,
                    "h": {"name": " ".join(tokens[start:end]), "pos": [start, end]},
                    "t": {"name": name, "pos": objects[name]},
                    "img_id": img_id,
                    "relation": label,
                }
                lines.append(line)
                look = LOOKS[obj_type]
                meta.append({
                    "id": f"{split}-{len(lines)}",
                    "image_description": image_text,
                    "object": {"name": name, "type": obj_type, "colour": look["colour"], "shape": look["shape"],
                               "style": "solid" if is_subject else "hollow",
                               "role": "subject" if is_subject else "bystander",
                               "position": _position_word(boxes[i])},
                    "object_is_subject": is_subject,
                    "subject_type": plan["subject_type"],
                    "subject_noun": plan["noun"],
                    "subject_noun_reveals_type": plan["noun"] not in GENERIC_NOUNS,
                    "entity": " ".join(link["entity"]),
                    "entity_type": link["ent_type"],
                    "cue": link["cue"],
                    "cue_words": " ".join(link["words"]),
                    "ambiguous_cue": link["ambiguous"],
                    "label": label,
                })
    return lines, meta, ent_dict, captions


def generate(data_dir: str | Path, cfg: ToyConfig = ToyConfig()) -> Path:
    """Write the toy dataset to ``data_dir`` in the MORE layout; returns the directory."""
    import torch

    data_dir = Path(data_dir)
    (data_dir / "txt").mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    all_captions: dict[str, dict[str, str]] = {}
    all_meta = []
    for split in SPLITS:
        lines, meta, ent_dict, captions = generate_split(rng, cfg, split, getattr(cfg, split), data_dir)
        text = "".join(repr(line) + "\n" for line in lines)
        (data_dir / "txt" / f"{split}.txt").write_text(text)
        with open(data_dir / f"ent_{split}_dict.pth", "wb") as f:
            torch.save(ent_dict, f)
        all_captions.update(captions)
        all_meta.extend(meta)
    write_json(data_dir / "rel2id.json", REL2ID, indent=1)
    (data_dir / "caption_dict.json").write_text(json.dumps(all_captions, indent=1, sort_keys=True) + "\n")
    write_text(meta_path(data_dir), "".join(json.dumps(row, sort_keys=True) + "\n" for row in all_meta))
    write_json(config_path(data_dir), asdict(cfg), indent=1)  # written last: the world is complete
    return data_dir


def config_path(data_dir: str | Path) -> Path:
    """The generator's settings, written beside the world by :func:`generate`."""
    return Path(data_dir) / CONFIG_FILE


def check_config(data_dir: str | Path, cfg: ToyConfig) -> None:
    """Raise ``ValueError`` naming the first setting in which the world at ``data_dir`` differs from ``cfg``.

    A profile whose toy sizes changed would otherwise go on with the world an earlier run wrote.
    A world written before the settings were kept beside it is checked by its sizes only: a split
    draws whole pairs, of at most two entities times the most objects, until it has enough facts.
    """
    path = config_path(data_dir)
    if not path.is_file():
        most_per_pair = 2 * max(cfg.object_counts)
        for split in SPLITS:
            txt = Path(data_dir, "txt", f"{split}.txt")
            facts, wanted = txt.read_text().count("\n"), getattr(cfg, split)
            if not wanted <= facts < wanted + most_per_pair:
                raise ValueError(f"{txt}: this toy world holds {facts} {split} facts, the settings ask for {wanted}")
        return
    written = json.loads(path.read_text())
    for key, wanted in asdict(cfg).items():
        if written.get(key) != wanted:
            raise ValueError(f"{path}: this toy world was written with {key}={written.get(key)!r}, "
                             f"the settings ask for {wanted!r}")


# ----------------------------------------------------------------------------- baselines


def _micro_scores(gold: list[str], pred: list[str]) -> dict[str, float]:
    """Acc/P/R/F1 with the MORE micro metric (morelib.metrics.score)."""
    from morelib.metrics import score

    return {k: float(v) for k, v in score(gold, pred).items() if k in ("acc", "precision", "recall", "f1")}


# What each predictor may see. The text side is the headline (subject noun, cue wording, entity type);
# the object side is the crop (the object's type and whether it is drawn solid).
FEATURES = {
    "text_only": lambda m: (m["cue_words"], m["entity_type"], m["subject_type"] if m["subject_noun_reveals_type"] else "?"),
    "image_only": lambda m: (m["object"]["type"], m["object"]["style"]),
    "both": lambda m: (m["cue_words"], m["entity_type"], m["object"]["type"], m["object"]["style"]),
}


def meta_path(data_dir: str | Path) -> Path:
    """``toy_meta.jsonl`` of a toy data directory."""
    return Path(data_dir) / META_FILE


def read_meta(data_dir: str | Path) -> dict[str, list[dict]]:
    """``toy_meta.jsonl`` grouped by split (``{split}-{line}`` ids), in file order."""
    by_split: dict[str, list[dict]] = defaultdict(list)
    for row in read_jsonl(meta_path(data_dir), required=("id", "label")):
        by_split[row["id"].rsplit("-", 1)[0]].append(row)
    return by_split


def meta_by_id(data_dir: str | Path) -> dict[str, dict]:
    """toy_meta.jsonl as {sample id: facts}; for the offline expert only."""
    return {row["id"]: row for rows in read_meta(data_dir).values() for row in rows}


def _fit(rows: list[dict], feature) -> dict[tuple, tuple[str, str, float]]:
    """feature value -> (majority label, most frequent relation, that relation's share)."""
    table: dict[tuple, Counter] = defaultdict(Counter)
    for row in rows:
        table[feature(row)][row["label"]] += 1
    fitted = {}
    for key, counts in table.items():
        # ties broken by label order so the result is deterministic
        majority = max(counts.items(), key=lambda kv: (kv[1], -REL2ID[kv[0]]))[0]
        relations = [(n, -REL2ID[lab], lab) for lab, n in counts.items() if lab != NONE]
        top = max(relations)[2] if relations else NONE
        fitted[key] = (majority, top, counts[top] / sum(counts.values()) if relations else 0.0)
    return fitted


def _predict(fitted, feature, rows, threshold: float | None) -> list[str]:
    """Majority label (threshold None), or the top relation wherever its share reaches threshold."""
    out = []
    for row in rows:
        majority, top, share = fitted.get(feature(row), (NONE, NONE, 0.0))
        out.append(majority if threshold is None else (top if share >= threshold else NONE))
    return out


def baselines(data_dir: str | Path) -> dict[str, dict[str, float]]:
    """Test scores of predictors fitted on train that see the text side, the object side, or both.

    For each side, two rules: the majority label per feature value (best accuracy), and
    "f1": the most frequent relation wherever its share reaches a threshold tuned for F1 on
    train (the majority rule predicts none almost everywhere, so this is the fairer rival).
    """
    meta = read_meta(data_dir)
    gold = [row["label"] for row in meta["test"]]
    results = {}
    for name, feature in FEATURES.items():
        fitted = _fit(meta["train"], feature)
        results[f"{name}"] = _micro_scores(gold, _predict(fitted, feature, meta["test"], None))
        train_gold = [row["label"] for row in meta["train"]]
        thresholds = sorted({share for _, _, share in fitted.values() if share > 0}) or [1.0]
        best = max(thresholds, key=lambda t: (_micro_scores(train_gold, _predict(fitted, feature, meta["train"], t))["f1"], -t))
        results[f"{name}_f1"] = _micro_scores(gold, _predict(fitted, feature, meta["test"], best))
    return results


def label_distribution(data_dir: str | Path) -> dict[str, Counter]:
    return {split: Counter(r["label"] for r in rows) for split, rows in read_meta(data_dir).items()}


# ----------------------------------------------------------------------------- CLI


def _generate_command(args) -> int:
    from morelib import cli

    out = generate(args.data_dir, cli.settings(args, ToyConfig))
    counts = label_distribution(out)
    for split in SPLITS:
        total = sum(counts[split].values())
        print(f"{split}: {total} facts, none {counts[split][NONE] / total:.1%}, "
              f"{sum(1 for v in counts[split].values() if v)} labels present")
    print(f"wrote {out}")
    return 0


def _baselines_command(args) -> int:
    if not meta_path(args.data_dir).is_file():
        raise FileNotFoundError(f"{meta_path(args.data_dir)}: no such file (is {args.data_dir} a toy data directory?)")
    print(f"{'predictor':<12} {'Acc':>7} {'P':>7} {'R':>7} {'F1':>7}")
    for name, s in baselines(args.data_dir).items():
        print(f"{name:<12} " + " ".join(f"{100 * s[k]:7.2f}" for k in ("acc", "precision", "recall", "f1")))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m morelib.toy generate DATA_DIR`` and ``python -m morelib.toy baselines DATA_DIR``."""
    from morelib import cli

    parser = cli.make_parser("python -m morelib.toy", "The synthetic toy world in the MORE layout.")
    commands = cli.add_commands(parser)
    make = cli.add_command(commands, "generate", "write the toy dataset (txt/, img_org/, entity dicts, "
                           "toy_meta.jsonl) into DATA_DIR", [ToyConfig])
    make.add_argument("data_dir", help="where to write the dataset (created if missing)")
    make.set_defaults(run=_generate_command)
    scores = cli.add_command(commands, "baselines", "test scores of predictors that see the text only, "
                             "the object only, or both (fitted on train)")
    scores.add_argument("data_dir", help="a toy data directory written by the generate command")
    scores.set_defaults(run=_baselines_command)
    return cli.run(parser, argv, lambda args: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
