"""Pretraining the toy's base: a corpus without labels or reasoning, a build that is cached by the
hash of its inputs, and a base that a run loads like any other."""

import json

import pytest

from morelib import pretrain
from morelib.labels import RELATIONS

from conftest import TINY_SIZES

# Small enough to build in seconds: 60 corpus facts, one epoch, a probe of 6 facts.
SMALL = {"facts": 60, "epochs": 1, "probe_facts": 6, "batch_size": 8}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("base_cache")
    settings = pretrain.PretrainSettings(**SMALL)
    base = pretrain.cached_base(TINY_SIZES, settings, seed=0, cache_root=root)
    return root, settings, base


def test_corpus_teaches_skills_but_holds_no_label_and_no_reasoning(tmp_path, toy_world):
    settings = pretrain.PretrainSettings(facts=80, probe_facts=4)
    data_dir = pretrain.write_corpus(tmp_path / "corpus", settings)
    rows = pretrain.corpus_rows(data_dir, "train", settings)
    assert len(rows) >= 80 and {r["task"] for r in rows} == set(pretrain.TASKS)
    text = "\n".join(r["instruction"] + "\n" + r["answer"] for r in rows)
    assert not [label for label in RELATIONS[1:] if label in text]
    assert "Step " not in text and "<answer>" not in text and "relation" not in text
    # Its own seed: no picture of the run's world is in the corpus.
    corpus_images = {p.name for p in (data_dir / "img_org").rglob("*.jpg")}
    run_images = {p.name for p in (toy_world.data_dir / "img_org").rglob("*.jpg")}
    assert corpus_images and corpus_images.isdisjoint(run_images)
    # The crop task names type and role; the entity task copies the cue words and the entity.
    crop = next(r for r in rows if r["task"] == "crop")
    assert crop["answer"].startswith(("a solid ", "a hollow ")) and ("subject" in crop["answer"] or "bystander" in crop["answer"])


def test_unknown_task_weight_is_refused(tmp_path):
    settings = pretrain.PretrainSettings(facts=10, probe_facts=2, task_weights={"crop": 1, "riddle": 1})
    data_dir = pretrain.write_corpus(tmp_path / "corpus", settings)
    with pytest.raises(ValueError, match="task_weights"):
        pretrain.corpus_rows(data_dir, "train", settings)


def test_cache_key_follows_every_input():
    base = pretrain.PretrainSettings(**SMALL)
    key = pretrain.cache_key(TINY_SIZES, base, 0)
    assert key == pretrain.cache_key(dict(TINY_SIZES), pretrain.PretrainSettings(**{**SMALL, "epochs": 1.0}), 0)
    assert key != pretrain.cache_key(TINY_SIZES, pretrain.PretrainSettings(**{**SMALL, "facts": 61}), 0)
    assert key != pretrain.cache_key(TINY_SIZES, base, 1)
    assert key != pretrain.cache_key({**TINY_SIZES, "hidden_size": 32}, base, 0)
    assert key == pretrain.cache_key(TINY_SIZES, base, 0, cue_wordings=1) != pretrain.cache_key(TINY_SIZES, base, 0, 4)


def test_build_records_loss_and_probe_and_is_reused(built, monkeypatch):
    root, settings, base = built
    record = json.loads((base / pretrain.DONE_FILE).read_text())
    assert record["corpus_rows"] >= 60 and record["loss"] and record["train_seconds"] > 0
    assert set(record["probe"]["skills"]) == {*pretrain.TASKS, "more_task"}
    assert record["probe_before"] is not None and len(record["corpus_examples"]) == len(pretrain.TASKS)
    # A second request finds the cached base and launches nothing.
    monkeypatch.setattr("morelib.launch.launch", lambda *a, **k: pytest.fail("rebuilt a cached base"))
    assert pretrain.cached_base(TINY_SIZES, pretrain.PretrainSettings(**SMALL), 0, cache_root=root) == base


def test_installed_base_loads_without_checkpoints(built, tmp_path):
    from morelib.model import load_model

    _, _, base = built
    target = pretrain.install_base(base, tmp_path / "models" / "base")
    assert not (target / "ckpt").exists() and (target / pretrain.DONE_FILE).is_file()
    model, processor = load_model(target)
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
