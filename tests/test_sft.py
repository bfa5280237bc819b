"""Stage 1 SFT: the loss mask, the frozen vision tower, resuming, skipping, and a real 2-process run."""

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from morelib import sft, toy
from morelib.data import load_split
from morelib.launch import launch, write_settings
from morelib.tiny import TinySettings, build_tiny_model

SMALL = TinySettings(hidden_size=64, intermediate_size=128, vocab_size=1024)
COMPLETION = "<think>\nStep 1: a solid red circle.\n</think>\n<answer>{label}</answer>"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=3, train=40, valid=10, test=10))
    model_dir = build_tiny_model(root / "model", data_dir, seed=0, settings=SMALL)
    samples = load_split(data_dir, "train")
    train_file = root / "stage1.jsonl"
    with open(train_file, "w") as f:
        for s in samples[:12]:
            f.write(json.dumps({"id": s.id, "label": s.label, "completion": COMPLETION.format(label=s.label)}) + "\n")
    ids_file = root / "split_ids.json"
    ids_file.write_text(json.dumps({"stage1": [s.id for s in samples[:8]], "stage2_pool": []}))
    return {"root": root, "data": data_dir, "model": model_dir, "train_file": train_file,
            "ids_file": ids_file, "samples": samples}


def settings(world, name, **overrides):
    values = dict(model_path=str(world["model"]), data_dir=str(world["data"]),
                  output_dir=str(world["root"] / "runs" / name), train_file=str(world["train_file"]),
                  epochs=1, per_device_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3,
                  max_length=None, logging_steps=1, save_strategy="no", max_steps=2)
    values.update(overrides)
    return sft.SFTSettings(**values)


def test_loss_mask_covers_the_completion_only(world):
    trainer = sft.build_trainer(settings(world, "mask"))
    rows = [trainer.train_dataset[i] for i in range(3)]
    assert [len(r["images"]) for r in rows] == [2, 2, 2]
    batch = trainer.data_collator(rows)
    tokenizer = trainer.processing_class.tokenizer
    for i, row in enumerate(rows):
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        kept = (labels != -100).nonzero().flatten()
        # One contiguous block of supervised tokens, at the very end of the real tokens ...
        assert kept.numel() > 0 and (kept.diff() == 1).all()
        assert kept[-1] == batch["attention_mask"][i].nonzero().max()
        # ... which is exactly the assistant completion (and the end-of-turn that stops generation).
        completion = row["completion"][0]["content"][0]["text"]
        assert tokenizer.decode(ids[kept]).strip() == completion + "<|im_end|>"
        assert "<|image_pad|>" in tokenizer.decode(ids[: kept[0]])
        assert torch.equal(labels[kept], ids[kept])


def test_no_gradient_reaches_the_vision_tower_and_llm_weights_change(world):
    trainer = sft.build_trainer(settings(world, "frozen", max_steps=3))
    model = trainer.model
    visual = dict(model.model.visual.named_parameters())
    assert visual and not any(p.requires_grad for p in visual.values())

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model(**batch).loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in visual.values())
    llm_grads = [p.grad for n, p in model.named_parameters() if "language_model" in n and p.grad is not None]
    assert any(g.abs().sum() > 0 for g in llm_grads)
    model.zero_grad(set_to_none=True)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert not any(n.startswith("model.visual") for n in changed)
    assert any("language_model.layers" in n for n in changed)


def test_label_target_uses_the_bare_label_and_the_chosen_ids(world):
    everything = sft.build_dataset(settings(world, "x", target="label", train_file=None), {s.id: s for s in world["samples"]},
                                   sft.training_rows(settings(world, "x", target="label", train_file=None),
                                                     {s.id: s for s in world["samples"]}))
    assert len(everything) == len(world["samples"])
    quarter = settings(world, "y", target="label", train_file=None, ids_file=str(world["ids_file"]), ids_key="stage1")
    rows = sft.training_rows(quarter, {s.id: s for s in world["samples"]})
    assert rows == [(s.id, s.label) for s in world["samples"][:8]]


def test_blank_images_keep_the_size_and_hide_the_content(world):
    by_id = {s.id: s for s in world["samples"]}
    plain = settings(world, "plain")
    blank = settings(world, "blank", blank_images=True)
    rows = sft.training_rows(plain, by_id)
    real = sft.build_dataset(plain, by_id, rows)[0]["images"]
    empty = sft.build_dataset(blank, by_id, rows)[0]["images"]
    assert [im.size for im in real] == [im.size for im in empty]
    assert all(len(im.getcolors()) == 1 for im in empty) and len(real[0].getcolors(10**5)) > 1


def test_bad_training_file_names_file_line_and_field(world, tmp_path):
    bad = tmp_path / "stage1.jsonl"
    bad.write_text(json.dumps({"id": "train-1", "completion": "x"}) + "\n" + json.dumps({"id": "train-2"}) + "\n")
    with pytest.raises(ValueError, match=r"stage1.jsonl:2: field 'completion'"):
        sft.read_completions(bad)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"id": "train-99999", "completion": "x"}) + "\n")
    with pytest.raises(ValueError, match="train-99999"):
        sft.training_rows(settings(world, "u", train_file=str(unknown)), {s.id: s for s in world["samples"]})
    with pytest.raises(ValueError, match="target"):
        settings(world, "t", target="labels")


class StopAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_rerun_resumes_from_the_last_checkpoint_then_skips(world, capsys):
    straight = sft.train(settings(world, "straight", max_steps=4))

    longer = settings(world, "resume", max_steps=4, save_strategy="steps", save_steps=1)
    out = Path(longer.output_dir)
    # A run interrupted after step 2: checkpoints exist, the final model does not.
    interrupted = sft.build_trainer(longer)
    interrupted.add_callback(StopAfter(2))
    interrupted.train()
    assert (out / "ckpt" / "checkpoint-2").is_dir() and not (out / "ckpt" / "checkpoint-3").exists()
    assert not sft.is_done(out)

    capsys.readouterr()
    sft.train(longer)
    assert "resuming from" in capsys.readouterr().out
    log = sft.read_log(out)
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    assert json.loads((out / sft.DONE_FILE).read_text())["global_step"] == 4
    # Resuming restores weights, optimizer, schedule and data order: same result as one straight run.
    resumed, reference = weights(out), weights(straight)
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-5) for k in reference)

    sft.train(longer)
    assert "skipping" in capsys.readouterr().out


def test_lora_run_saves_a_merged_model(world):
    out = sft.train(settings(world, "lora", use_lora=True, lora_r=4, lora_alpha=8, max_steps=1))
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    from morelib.model import load_model

    model, _ = load_model(out, dtype="float32", device="cpu")
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_two_process_distributed_run_on_cpu(world):
    run = settings(world, "ddp", max_steps=2)
    path = write_settings(run, world["root"] / "ddp_settings.json")
    log = launch("morelib.sft", path, num_processes=2, distributed="multi_gpu",
                 log_path=world["root"] / "ddp.log", env={"OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "rank 0 of world size 2" in text and "rank 1 of world size 2" in text
    out = world["root"] / "runs" / "ddp"
    assert json.loads((out / sft.DONE_FILE).read_text())["world_size"] == 2
    # Each update consumed 2 rows per process: 2 updates cover 8 of the 12 rows, not 4.
    assert sft.read_log(out)[-1]["epoch"] == pytest.approx(8 / 12, abs=0.01)


def test_blank_image_samples_for_the_ablation_check(world, tmp_path):
    from morelib.data import load_images

    samples = load_split(world["data"], "test")[:3]
    blank = sft.blank_image_samples(samples, tmp_path / "blank")
    assert [(b.id, b.label, b.box) for b in blank] == [(s.id, s.label, s.box) for s in samples]
    for s, b in zip(samples, blank):
        real_images, blank_images = load_images(s), load_images(b)
        assert [im.size for im in real_images] == [im.size for im in blank_images]
        assert all(len(im.getcolors()) == 1 for im in blank_images)
