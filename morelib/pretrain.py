"""Pretraining the toy's base model: what a real VLM already knows before MORE-R1 starts.

MORE-R1 fine-tunes Qwen2.5-VL, which can already see colours and shapes, describe a picture and
copy a name out of a headline; it has never seen the MORE task. A tiny model with random weights
knows none of it, so its Stage 1 would have to learn to see, to copy and to solve the task from a
few hundred rows at once. This module gives the toy a base like the real one (notebook
``00_prepare`` is the lesson):

- the **corpus** is the toy world drawn with a seed of its own (``corpus_seed``), so no image or
  headline of the run's train, valid or test split is in it;
- it holds **no relation labels and no six-step reasoning**: each fact becomes one small task
  that teaches a skill the reasoning later needs (:data:`TASKS`): say what the crop shows (colour
  and shape give the type; solid is the headline's subject, hollow a bystander), describe the
  whole picture, say what the text says about an entity (copy its name and the cue words, give
  its type), or copy the text;
- the tokenizer and the model are built by :mod:`morelib.tiny`, then trained on the corpus with
  TRL's SFTTrainer, vision tower included (a real VLM's tower was trained too);
- a **probe** on held-out corpus facts measures each skill, and asks the base the MORE task
  itself: it should describe and copy, but give no relation.

The result is cached by the hash of everything that makes it (:func:`cache_key`): the corpus and
training settings, the model's sizes, the seed and :data:`FORMAT_VERSION`. Reruns, other run
directories and the tests reuse it; a changed setting builds a new one.

    python -m morelib.pretrain build OUT_DIR [--facts 3000 --epochs 3 ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morelib.files import write_json

# Bump when the corpus or its tasks change: a cached base built by older code is then rebuilt.
FORMAT_VERSION = 2
DONE_FILE = "pretrain.json"  # in a cached base: written last, so its presence means complete

# Each task: the instruction the base is given (after the two images and the text), and what it
# must answer, from the facts the toy generator wrote for one line (toy_meta.jsonl).
TASKS = ("crop", "entity", "image", "text")


def task_rows(meta: dict, text: str, task: str) -> tuple[str, str]:
    """(instruction, answer) of one corpus task for one fact."""
    obj = meta["object"]
    if task == "crop":
        role = "the subject of the text" if obj["role"] == "subject" else "a bystander"
        return ("What is the object in the second image?",
                f"a {obj['style']} {obj['colour']} {obj['shape']}: {_a(obj['type'])}, {role}.")
    if task == "entity":
        entity = meta["entity"]
        return (f'What does the text say about "{entity}"?',
                f"The {meta['subject_noun']} {meta['cue_words']} {entity}; {entity} is {_a(meta['entity_type'])}.")
    if task == "image":
        return ("Describe the first image.", meta["image_description"])
    if task == "text":
        return ("Repeat the text.", text)
    raise ValueError(f"pretraining task {task!r}: expected one of {TASKS}")


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


@dataclass
class PretrainSettings:
    """How the toy's base model is pretrained (profile key ``00_prepare.pretrain``)."""

    epochs: float = field(default=2.0, metadata={
        "help": "passes over the corpus; 0 = no pretraining (the random base of earlier versions)"})
    facts: int = field(default=3000, metadata={
        "help": "corpus size in facts (lines of the toy world); each fact gives one task"})
    probe_facts: int = field(default=120, metadata={"help": "held-out facts the probe asks"})
    corpus_seed: int = field(default=1000, metadata={
        "help": "seed of the corpus's toy world; keep it apart from the run's seed"})
    task_weights: dict = field(default_factory=lambda: {"crop": 3, "entity": 3, "image": 1, "text": 1}, metadata={
        "help": "relative chance of each task per fact (crop, entity, image, text)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate (cosine schedule)"})
    batch_size: int = field(default=16, metadata={"help": "rows per optimizer step"})
    threads: int = field(default=0, metadata={"help": "torch threads while pretraining; 0 = every core"})

    def __post_init__(self):
        # YAML's 3 and the command line's 3.0 are one setting: the cache key must not tell them apart.
        self.epochs, self.learning_rate = float(self.epochs), float(self.learning_rate)


def cache_key(tiny: dict, settings: PretrainSettings, seed: int, cue_wordings: int = 1) -> str:
    """The hash that names a cached base: every input that changes what is built."""
    payload = {"version": FORMAT_VERSION, "tiny": tiny, "pretrain": asdict(settings), "seed": seed,
               "cue_wordings": cue_wordings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_root() -> Path:
    """``$MORELIB_CACHE`` or ``$XDG_CACHE_HOME/morelib`` (``~/.cache/morelib``): outside the repository."""
    if os.environ.get("MORELIB_CACHE"):
        return Path(os.environ["MORELIB_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "morelib"


# ----------------------------------------------------------------------------- the corpus


def write_corpus(out_dir: Path, settings: PretrainSettings, cue_wordings: int = 1) -> Path:
    """The corpus's toy world in the MORE layout: ``train`` is the corpus, ``valid`` the probe's facts."""
    from morelib import toy

    # The run's world's wordings (``toy_cue_wordings``), not their meaning. With all four wordings
    # the same corpus taught the base to copy the cue in 23% of held-out facts against 82% with
    # one: a many-worded world needs a longer pretraining (docs/stage2-on-the-toy.md).
    toy.generate(out_dir, toy.ToyConfig(seed=settings.corpus_seed, train=settings.facts, valid=settings.probe_facts,
                                        test=0, cue_wordings=cue_wordings))
    (out_dir / "txt" / "test.txt").unlink()  # no test split: the corpus is never scored as a task
    return out_dir


def corpus_rows(data_dir: Path, split: str, settings: PretrainSettings) -> list[dict]:
    """One task per fact, drawn by ``task_weights`` (seeded): ``{id, task, instruction, answer}``."""
    from morelib import toy
    from morelib.data import load_split

    meta = toy.meta_by_id(data_dir)
    rng = random.Random(settings.corpus_seed)
    tasks = [t for t in TASKS if settings.task_weights.get(t, 0) > 0]
    unknown = set(settings.task_weights) - set(TASKS)
    if unknown or not tasks:
        raise ValueError(f"pretrain.task_weights: expected positive weights for some of {TASKS}, got {settings.task_weights}")
    weights = [settings.task_weights[t] for t in tasks]
    rows = []
    for sample in load_split(data_dir, split):
        task = rng.choices(tasks, weights)[0]
        instruction, answer = task_rows(meta[sample.id], sample.text, task)
        rows.append({"id": sample.id, "task": task, "instruction": instruction, "answer": answer})
    return rows


def prompt(sample, instruction: str) -> list[dict]:
    """The base's prompt: the same two images as the MORE task, the text, and the instruction."""
    from morelib.prompts import user_turn

    return [user_turn(f"Text: {sample.text}\n{instruction}")]


# ----------------------------------------------------------------------------- training


def _trainer(out_dir: Path, init_dir: Path, data_dir: Path, settings: PretrainSettings, seed: int):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from morelib.data import load_images, load_split
    from morelib.model import load_model
    from morelib.prompts import assistant_turn

    model, processor = load_model(init_dir, dtype="float32", device="cpu", freeze_vision=False)
    samples = {s.id: s for s in load_split(data_dir, "train")}
    rows = corpus_rows(data_dir, "train", settings)
    dataset = Dataset.from_dict({key: [r[key] for r in rows] for key in ("id", "instruction", "answer")})

    def to_conversation(batch):
        out = {"prompt": [], "completion": [], "images": []}
        for row_id, instruction, answer in zip(batch["id"], batch["instruction"], batch["answer"]):
            out["prompt"].append(prompt(samples[row_id], instruction))
            out["completion"].append(assistant_turn(answer))
            out["images"].append(list(load_images(samples[row_id])))
        return out

    dataset.set_transform(to_conversation)
    args = SFTConfig(
        output_dir=str(out_dir / "ckpt"), num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.0, max_length=None, bf16=False, gradient_checkpointing=False, logging_steps=10,
        logging_first_step=True,
        save_strategy="epoch", save_total_limit=1, report_to="none", disable_tqdm=True, seed=seed,
        dataloader_num_workers=0, remove_unused_columns=False,
    )
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)


def build(out_dir: str | Path, tiny: dict, settings: PretrainSettings, seed: int = 0, cue_wordings: int = 1) -> Path:
    """Build the pretrained base into ``out_dir/model`` (resumable); returns that directory.

    ``out_dir`` also keeps the corpus (``corpus/``), the model before pretraining (``init/``) and,
    last, :data:`DONE_FILE` with the time, the loss curve and the probe.
    """
    import torch

    from morelib import tiny as tiny_model
    from morelib.data import load_split
    from morelib.training import read_log, read_summary, train_to_done

    if settings.threads:
        torch.set_num_threads(settings.threads)
    out_dir = Path(out_dir)
    started = time.time()
    data_dir = out_dir / "corpus"
    if not (data_dir / "txt" / "train.txt").is_file():
        write_corpus(data_dir, settings, cue_wordings)
    rows = corpus_rows(data_dir, "train", settings)
    init_dir = out_dir / "init"
    if not (init_dir / "config.json").is_file():
        # The tokenizer also learns the corpus's answers, so descriptions cost few tokens.
        tiny_model.build_tiny_model(init_dir, data_dir, seed=seed, settings=tiny_model.TinySettings(**tiny),
                                    extra_texts=[r["answer"] for r in rows])
    model_dir = out_dir / "model"
    if settings.epochs > 0:
        train_to_done(model_dir, lambda: _trainer(model_dir, init_dir, data_dir, settings, seed), tag="pretrain")
    elif not (model_dir / "config.json").is_file():
        shutil.copytree(init_dir, model_dir)
    build_seconds = time.time() - started
    probed = probe(model_dir, data_dir, settings)
    # The same questions to the random weights, fewer of them (a random model rambles to the cap).
    before = probe(init_dir, data_dir, settings, limit=24) if settings.epochs > 0 else None
    samples = {s.id: s for s in load_split(data_dir, "train")}
    examples = _one_per_task(rows, samples)
    log = read_log(model_dir) if (model_dir / "log.jsonl").is_file() else []
    write_json(out_dir / DONE_FILE, {
        "key": out_dir.name, "tiny": tiny, "pretrain": asdict(settings), "seed": seed, "cue_wordings": cue_wordings,
        # build_seconds: this call's (a build resumed after its training finished counts only the rest)
        "corpus_rows": len(rows), "build_seconds": round(build_seconds, 1),
        "train_seconds": read_summary(model_dir)["train_seconds"] if settings.epochs > 0 else 0.0,
        "loss": [{"step": e["step"], "loss": round(e["loss"], 4)} for e in log if "loss" in e],
        "corpus_examples": examples, "probe": probed, "probe_before": before,
    })
    return model_dir


def _one_per_task(rows: list[dict], samples: dict) -> list[dict]:
    """The first corpus row of each task, with its text (what notebook 00 shows)."""
    first = {}
    for row in rows:
        first.setdefault(row["task"], {**row, "text": samples[row["id"]].text})
    return [first[t] for t in TASKS if t in first]


# ----------------------------------------------------------------------------- the probe


def probe(model_dir: Path, data_dir: Path, settings: PretrainSettings, limit: int | None = None) -> dict:
    """What the base can do on held-out facts: each task's exact-answer rate and the shares of
    answers that name the right type, role, cue and entity; and what it says to the MORE task."""
    from morelib import toy
    from morelib.answer import parse_label
    from morelib.data import load_split
    from morelib.model import load_model

    meta = toy.meta_by_id(data_dir)
    samples = load_split(data_dir, "valid")[:limit]
    model, processor = load_model(model_dir, dtype="float32", device="cpu")
    model.eval()
    results: dict = {}
    examples: dict = {}
    for task in TASKS:
        pairs = [task_rows(meta[s.id], s.text, task) for s in samples]
        outputs = greedy(model, processor, [prompt(s, instruction) for s, (instruction, _) in zip(samples, pairs)], samples)
        exact = [out.strip() == answer for out, (_, answer) in zip(outputs, pairs)]
        row = {"exact": round(sum(exact) / len(exact), 3)}
        if task == "crop":
            row["type"] = _share(outputs, [_a(meta[s.id]["object"]["type"]) + "," for s in samples])
            row["role"] = _share(outputs, [("subject" if meta[s.id]["object_is_subject"] else "bystander")
                                           for s in samples])
        if task == "entity":
            row["cue"] = _share(outputs, [meta[s.id]["cue_words"] for s in samples])
            row["entity"] = _share(outputs, [meta[s.id]["entity"] for s in samples])
        results[task] = row
        examples[task] = {"instruction": pairs[0][0], "expected": pairs[0][1], "output": outputs[0]}
    # The MORE task itself: a base that has never seen it should give no relation.
    from morelib.prompts import student_prompt

    outputs = greedy(model, processor, [student_prompt(s) for s in samples], samples, max_new_tokens=192)
    labels = [parse_label(out) for out in outputs]
    results["more_task"] = {"parsed_label": round(sum(lab is not None for lab in labels) / len(labels), 3),
                            "relation": round(sum(lab not in (None, "none") for lab in labels) / len(labels), 3)}
    examples["more_task"] = {"output": outputs[0]}
    return {"facts": len(samples), "skills": results, "examples": examples}


def greedy(model, processor, prompts: list[list[dict]], samples, max_new_tokens: int = 96,
           batch_size: int = 32) -> list[str]:
    """Greedy answers of ``model`` to conversational prompts, each with its sample's two images."""
    import torch

    from morelib.data import load_images

    tokenizer = processor.tokenizer
    previous, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation appends on the right
    outputs = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = slice(start, start + batch_size)
            texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts[chunk]]
            images = [list(load_images(s)) for s in samples[chunk]]
            inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            outputs += tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = previous
    return outputs


def _share(outputs: list[str], needles: list[str]) -> float:
    return round(sum(needle in out for out, needle in zip(outputs, needles)) / len(outputs), 3)


# ----------------------------------------------------------------------------- the cache


def cached_base(tiny: dict, settings: PretrainSettings, seed: int = 0, cue_wordings: int = 1,
                cache_root: str | Path | None = None,
                log_path: str | Path | None = None) -> Path:
    """The cached base's directory (``<cache>/base-<key>``), built first if missing.

    The build runs as a subprocess (its memory is freed when it ends), under a file lock, so two
    runs that need the same base build it once.
    """
    from filelock import FileLock

    from morelib.launch import launch

    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    out_dir = root / f"base-{cache_key(tiny, settings, seed, cue_wordings)}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / DONE_FILE).is_file():
            print(f"pretrained base found in the cache: {out_dir}")
            return out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        request = write_json(out_dir / "request.json", {"tiny": tiny, "pretrain": asdict(settings), "seed": seed,
                                                          "cue_wordings": cue_wordings})
        print(f"pretraining the base into {out_dir} (cached for later runs)")
        launch("morelib.pretrain", request, log_path=log_path or out_dir / "pretrain.log", distributed="none")
    return out_dir


def install_base(cached: Path, target: str | Path) -> Path:
    """Copy a cached base's model into a run (``models/base``), leaving out its checkpoints."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(Path(cached) / "model", target, ignore=shutil.ignore_patterns("ckpt", "done.json", "log.jsonl"))
    shutil.copyfile(Path(cached) / DONE_FILE, target / DONE_FILE)
    return target


def read_report(base_dir: str | Path) -> dict:
    """The pretraining record (time, loss, probe) kept beside a base."""
    from morelib.files import read_json

    return read_json(Path(base_dir) / DONE_FILE)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m morelib.pretrain --settings OUT_DIR/request.json`` (what :func:`cached_base` launches)
    or ``python -m morelib.pretrain build OUT_DIR [--epochs ...]``."""
    from morelib import cli

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--settings"]:
        request = json.loads(Path(argv[1]).read_text())
        build(Path(argv[1]).parent, request["tiny"], PretrainSettings(**request["pretrain"]), request["seed"],
              request.get("cue_wordings", 1))
        return 0
    parser = cli.make_parser("python -m morelib.pretrain", __doc__.splitlines()[0])
    commands = cli.add_commands(parser)
    make = cli.add_command(commands, "build", "pretrain a base into OUT_DIR (corpus, init, model, pretrain.json)",
                           [PretrainSettings])
    make.add_argument("out_dir", type=Path, help="where to build (created if missing; a rerun resumes)")
    make.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    make.add_argument("--tiny", type=json.loads, default={}, help="JSON overrides of the tiny model's sizes")
    make.add_argument("--cue-wordings", type=int, default=1, help="wordings per cue of the corpus's toy world")

    def _build(args) -> int:
        model_dir = build(args.out_dir, args.tiny, cli.settings(args, PretrainSettings), args.seed, args.cue_wordings)
        print(json.dumps(read_report(args.out_dir)["probe"]["skills"]))
        print(f"wrote {model_dir}")
        return 0

    make.set_defaults(run=_build)
    return cli.run(parser, argv, lambda args: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
