"""Stage 1 SFT: the loss mask, the frozen vision tower, over-long rows, resuming, skipping, LoRA
merging, and a real 2-process run."""

import json

import pytest
import torch
from transformers import TrainerCallback

from morelib import sft
from morelib.config import ConfigError, load_settings
from morelib.files import FileFormatError, write_json, write_jsonl
from morelib.layout import RunLayout
from morelib.launch import launch, write_settings
from morelib.prompts import prompt_template
from morelib.training import DONE_FILE, is_done, read_log, read_summary

COMPLETION = "<think>\nStep 1: a solid red circle.\n</think>\n<answer>{label}</answer>"
# About 750 tokens longer than COMPLETION with the tiny model's tokenizer: a row of ~1,050 tokens.
LONG_COMPLETION = "<think>\n" + "Step 1: a solid red circle on the left. " * 30 + "\n</think>\n<answer>{label}</answer>"
LONG_ROWS = 3  # the Stage 1 set's last rows carry LONG_COMPLETION


@pytest.fixture(scope="module")
def world(toy_world):
    """A run directory holding what notebooks 01 and 02 hand to 03: the split ids and the Stage 1 set."""
    run_dir = toy_world.run_dir("sft")
    layout = RunLayout(run_dir)
    samples = toy_world.samples("train")
    write_jsonl(layout.stage1_set, [{"id": s.id, "label": s.label, "completion": COMPLETION.format(label=s.label)}
                                    for s in samples[:12]])
    write_json(layout.split_ids, {"stage1": [s.id for s in samples[:8]], "stage2_pool": [s.id for s in samples[8:]]})
    return {"run_dir": run_dir, "data": toy_world.data_dir, "model": toy_world.model_dir, "samples": samples}


def settings(world, name, **changes):
    """The toy profile's SFT settings with a few steps on the tiny model."""
    values = dict(data_dir=str(world["data"]), base_model=str(world["model"]), model_name=name,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3,
                  max_length=2048, logging_steps=1, save_strategy="no", max_steps=2)
    return load_settings("03_sft", "toy", run_dir=world["run_dir"], **{**values, **changes})


def by_id(world):
    return {s.id: s for s in world["samples"]}


def supervised_text(trainer, rows):
    """For each row: the decoded tokens the loss covers, and the decoded tokens before them."""
    batch = trainer.data_collator(rows)
    tokenizer = trainer.processing_class.tokenizer
    out = []
    for i in range(len(rows)):
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        kept = (labels != -100).nonzero().flatten()
        # One contiguous block of supervised tokens, at the very end of the real tokens ...
        assert kept.numel() > 0 and (kept.diff() == 1).all()
        assert kept[-1] == batch["attention_mask"][i].nonzero().max()
        assert torch.equal(labels[kept], ids[kept])
        out.append((tokenizer.decode(ids[kept]).strip(), tokenizer.decode(ids[: kept[0]])))
    return out


def test_loss_mask_covers_the_completion_only(world):
    trainer = sft.build_trainer(settings(world, "mask"))
    rows = [trainer.train_dataset[i] for i in range(3)]
    assert [len(r["images"]) for r in rows] == [2, 2, 2]
    for row, (supervised, before) in zip(rows, supervised_text(trainer, rows)):
        # ... which is exactly the assistant completion (and the end-of-turn that stops generation).
        completion = row["completion"][0]["content"][0]["text"]
        assert supervised == completion + "<|im_end|>"
        assert "<|image_pad|>" in before


def test_no_gradient_reaches_the_vision_tower_and_llm_weights_change(world):
    trainer = sft.build_trainer(settings(world, "frozen", max_steps=3))
    model = trainer.model
    visual = dict(model.model.visual.named_parameters())
    assert visual and not any(p.requires_grad for p in visual.values())
    assert model.model.visual._runs_without_grad  # morelib.model.vision_without_grad

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


def test_length_grouping_reads_the_preflight_counts(with_long_rows, capsys):
    """train_sampling_strategy: group_by_length batches rows of similar length, from the token counts
    the pre-flight makes: the sampler never tokenizes a row or loads an image."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from morelib.overlong import sft_row_lengths

    s = settings(with_long_rows, "grouped", train_sampling_strategy="group_by_length", max_length=4096)
    trainer = sft.build_trainer(s)
    counted = dict(sft_row_lengths(by_id(with_long_rows), sft.training_rows(s, by_id(with_long_rows)),
                                   trainer.processing_class))
    assert max(counted.values()) > 2 * min(counted.values())  # LONG_ROWS are about 3x the others
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == list(counted.values())
    order = list(sampler)
    assert sorted(order) == list(range(12))
    # The longest rows come first (transformers puts the longest batch first, to fail early on memory).
    assert counted[list(counted)[order[0]]] == max(counted.values())
    plain = sft.build_trainer(settings(with_long_rows, "plain", max_length=4096))
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)


@pytest.fixture
def with_long_rows(world, toy_world):
    """A run directory whose Stage 1 set ends with LONG_ROWS rows of ~1,050 tokens (the others ~300)."""
    run_dir = toy_world.run_dir("sft_long")
    samples = world["samples"][:12]
    template = [COMPLETION] * (12 - LONG_ROWS) + [LONG_COMPLETION] * LONG_ROWS
    write_jsonl(RunLayout(run_dir).stage1_set, [{"id": s.id, "label": s.label, "completion": t.format(label=s.label)}
                                                for s, t in zip(samples, template)])
    return {**world, "run_dir": run_dir}


def test_an_overlong_row_is_dropped_and_counted_never_truncated(with_long_rows, capsys):
    s = settings(with_long_rows, "overlong", max_length=600, overlong_policy="drop", max_steps=1)
    trainer = sft.build_trainer(s)
    long_ids = [r.id for r in with_long_rows["samples"][12 - LONG_ROWS:12]]
    assert trainer.dropped_overlong == long_ids
    assert len(trainer.train_dataset) == 12 - LONG_ROWS
    printed = capsys.readouterr().out
    assert f"{LONG_ROWS} of 12 rows are longer than max_length=600 tokens: {long_ids[0]} (" in printed
    # Every kept row reaches the loss whole, answer included.
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    for row, (supervised, _) in zip(rows, supervised_text(trainer, rows)):
        assert supervised == row["completion"][0]["content"][0]["text"] + "<|im_end|>"
    # The count reaches the model's summary.
    out = sft.train(s)
    assert read_summary(out)["dropped_overlong"] == long_ids and read_summary(out)["rows"] == 12 - LONG_ROWS


def test_an_overlong_row_is_refused_with_policy_error(with_long_rows):
    with pytest.raises(ValueError, match=r"3 of 12 rows are longer than max_length=600 tokens: .*overlong_policy=drop"):
        sft.build_trainer(settings(with_long_rows, "refused", max_length=600, overlong_policy="error"))
    with pytest.raises(ConfigError, match="overlong_policy: 'truncate'"):
        settings(with_long_rows, "x", overlong_policy="truncate")


def test_label_target_uses_the_bare_label_and_the_chosen_ids(world):
    samples = by_id(world)
    everything = sft.training_rows(settings(world, "x", target="label", prompt="label"), samples)
    assert everything == [(s.id, s.label) for s in world["samples"]]
    quarter = sft.training_rows(settings(world, "y", target="label", prompt="label", ids_key="stage1"), samples)
    assert quarter == [(s.id, s.label) for s in world["samples"][:8]]
    with pytest.raises(FileFormatError, match=r"split_ids\.json: field 'stage9': missing"):
        sft.training_rows(settings(world, "z", target="label", ids_key="stage9"), samples)


def test_blank_images_keep_the_size_and_hide_the_content(world):
    samples = by_id(world)
    plain = settings(world, "plain")
    rows = sft.training_rows(plain, samples)
    template = prompt_template(plain.prompt)
    real = sft.build_dataset(samples, rows, template)[0]["images"]
    empty = sft.build_dataset(samples, rows, template, blank_images=True)[0]["images"]
    assert [im.size for im in real] == [im.size for im in empty]
    assert all(len(im.getcolors()) == 1 for im in empty) and len(real[0].getcolors(10**5)) > 1


def test_bad_training_file_names_file_line_and_field(world, toy_world):
    run_dir = toy_world.run_dir("sft_bad")
    stage1 = RunLayout(run_dir).stage1_set
    stage1.parent.mkdir(parents=True)
    stage1.write_text(json.dumps({"id": "train-1", "completion": "x"}) + "\n" + json.dumps({"id": "train-2"}) + "\n")
    bad = {**world, "run_dir": run_dir}
    with pytest.raises(FileFormatError, match=r"stage1\.jsonl:2: field 'completion'"):
        sft.training_rows(settings(bad, "b"), by_id(world))
    stage1.write_text(json.dumps({"id": "train-99999", "completion": "x"}) + "\n")
    with pytest.raises(FileFormatError, match=r"stage1\.jsonl: ids not in the training split .*train-99999"):
        sft.training_rows(settings(bad, "u"), by_id(world))
    with pytest.raises(ConfigError, match="target: 'labels'"):
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
    out = longer.model_dir
    assert longer.output_dir == str(out / "ckpt")
    # A run interrupted after step 2: checkpoints exist, the final model does not.
    interrupted = sft.build_trainer(longer)
    interrupted.add_callback(StopAfter(2))
    interrupted.train()
    assert (out / "ckpt" / "checkpoint-2").is_dir() and not (out / "ckpt" / "checkpoint-3").exists()
    assert not is_done(out)

    capsys.readouterr()
    assert sft.train(longer) == out
    assert "resuming from" in capsys.readouterr().out
    log = read_log(out)
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]
    summary = read_summary(out)
    assert summary["global_step"] == 4 and summary["settings"]["model_name"] == "resume"
    # Resuming restores weights, optimizer, schedule and data order: same result as one straight run.
    resumed, reference = weights(out), weights(straight)
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-5) for k in reference)
    # The processor is saved next to the model, with the run's image limits, so later stages load it from there.
    from morelib.model import load_processor

    size = load_processor(out).image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (longer.min_pixels, longer.max_pixels)

    sft.train(longer)
    assert "skipping" in capsys.readouterr().out


def test_lora_run_saves_a_merged_model(world):
    out = sft.train(settings(world, "lora", use_lora=True, lora_r=4, lora_alpha=8, max_steps=2, warmup_steps=0))
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    from morelib.model import load_model

    model, _ = load_model(out, dtype="float32", device="cpu")
    assert not any("lora" in n for n, _ in model.named_parameters())
    # The merge changed exactly the LLM's linear layers ("all-linear" of the LLM; the files keep the
    # release's key layout) and nothing else: not the vision tower, embeddings or norms.
    base, merged = weights(world["model"]), weights(out)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed == {k for k in base if k.startswith("model.layers.") and k.endswith("_proj.weight")}


def test_two_process_distributed_run_on_cpu(world):
    run = settings(world, "ddp", max_steps=2)
    path = write_settings(run, run.model_dir / "settings.json")
    log = launch("morelib.sft", path, num_processes=2, distributed="multi_gpu",
                 log_path=run.model_dir / "train.log", env={"OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "rank 0 of 2" in text and "rank 1 of 2" in text
    assert json.loads((run.model_dir / DONE_FILE).read_text())["world_size"] == 2
    # Each update consumed 2 rows per process: 2 updates cover 8 of the 12 rows, not 4.
    assert read_log(run.model_dir)[-1]["epoch"] == pytest.approx(8 / 12, abs=0.01)


def test_the_notebook_path_warns_about_a_changed_setting_and_retrains_nothing(world, capsys):
    """Notebook 03 trains through launch.train_in_subprocess; a finished model trained with other
    settings is kept as it is, with the warning, and no training process starts."""
    from morelib.launch import train_in_subprocess
    from morelib.layout import ModelFolder

    def train(**changes):
        return train_in_subprocess("morelib.sft", settings(world, "notebook_path", max_steps=1, distributed="none",
                                                           **changes))

    assert train()
    folder = ModelFolder(RunLayout(world["run_dir"]).checkpoint("notebook_path"))
    assert folder.finished and folder.settings.is_file() and folder.train_log.is_file()  # all in the model's folder
    done, log = folder.done.read_text(), folder.train_log.read_text()
    capsys.readouterr()
    assert not train()  # the same settings: skipped in silence
    assert "skipping" in (out := capsys.readouterr().out) and "warning" not in out
    assert not train(learning_rate=5e-4)
    out = capsys.readouterr().out
    assert f"[sft] warning: {folder.done} was trained with other settings, kept as it is: learning_rate: 0.001 -> 0.0005" in out
    assert folder.done.read_text() == done and folder.train_log.read_text() == log  # nothing ran again


def test_blank_image_samples_for_the_ablation_check(world, tmp_path):
    from morelib.data import load_images

    samples = world["samples"][:3]
    blank = sft.blank_image_samples(samples, tmp_path / "blank")
    assert [(b.id, b.label, b.box) for b in blank] == [(s.id, s.label, s.box) for s in samples]
    for s, b in zip(samples, blank):
        real_images, blank_images = load_images(s), load_images(b)
        assert [im.size for im in real_images] == [im.size for im in blank_images]
        assert all(len(im.getcolors()) == 1 for im in blank_images)
