"""The model loader: image resolution limits on the processor, and missing paths named as such."""

import json

import pytest
from PIL import Image

from conftest import TINY_SIZES
from morelib.model import check_model_path, load_model, load_processor
from morelib.tiny import TinySettings
from morelib.vision_tokens import PixelLimits, image_grid, processor_limits

SMALL = TinySettings(**TINY_SIZES)  # the session's tiny model (conftest.toy_world)
LIMITS = {"min_pixels": 8 * 28 * 28, "max_pixels": 100 * 28 * 28}


@pytest.fixture(scope="module")
def model_dir(toy_world):
    """The session's tiny model (conftest.toy_world)."""
    return toy_world.model_dir


def grid_of(processor, size):
    return tuple(processor.image_processor(images=[Image.new("RGB", size)])["image_grid_thw"][0].tolist())


def test_pixel_limits_reach_the_image_processor(model_dir):
    default = load_processor(model_dir)
    assert processor_limits(default) == PixelLimits(SMALL.min_pixels, SMALL.max_pixels) == PixelLimits(3136, 12544)
    processor = load_processor(model_dir, **LIMITS)
    assert processor_limits(processor) == PixelLimits(**LIMITS)
    for size in [(1920, 1080), (30, 30), (640, 480)]:
        assert grid_of(processor, size) == image_grid(*size, **LIMITS)
        assert grid_of(default, size) == image_grid(*size, min_pixels=3136, max_pixels=12544)
    assert grid_of(processor, (1920, 1080)) != grid_of(default, (1920, 1080))
    only_max = load_processor(model_dir, max_pixels=LIMITS["max_pixels"])
    assert processor_limits(only_max) == PixelLimits(SMALL.min_pixels, LIMITS["max_pixels"])


def test_limits_do_not_leak_into_other_processors(model_dir):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class_default = dict(Qwen2VLImageProcessorPil.size)
    load_processor(model_dir, **LIMITS)
    assert dict(Qwen2VLImageProcessorPil.size) == class_default
    assert processor_limits(load_processor(model_dir)) == PixelLimits(3136, 12544)


def test_a_saved_checkpoint_carries_the_limits_to_every_reader(model_dir, tmp_path):
    processor = load_processor(model_dir, **LIMITS)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]
    # The one place both the PIL and the torchvision image processor (and vLLM through them) read.
    assert saved["size"] == {"shortest_edge": LIMITS["min_pixels"], "longest_edge": LIMITS["max_pixels"]}
    assert processor_limits(load_processor(tmp_path)) == PixelLimits(**LIMITS)


def test_the_fast_image_processor_reads_the_same_limits(model_dir, tmp_path):
    pytest.importorskip("torchvision", reason="the fast (torchvision) image processor needs torchvision (GPU servers)")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    load_processor(model_dir, **LIMITS).save_pretrained(tmp_path)
    fast = Qwen2VLImageProcessor.from_pretrained(tmp_path)
    assert processor_limits(fast) == PixelLimits(**LIMITS)
    image = Image.new("RGB", (1920, 1080))
    assert tuple(fast(images=[image])["image_grid_thw"][0].tolist()) == image_grid(1920, 1080, **LIMITS)


def test_bad_limits_are_refused(model_dir):
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        load_processor(model_dir, min_pixels=50000, max_pixels=1000)


def test_load_model_passes_the_limits(model_dir):
    _, processor = load_model(model_dir, device="cpu", **LIMITS)
    assert processor_limits(processor) == PixelLimits(**LIMITS)


@pytest.mark.parametrize("missing", ["/no/such/model", "runs/toy/models/base", "./models/base", "~/nothing/here",
                                     "checkpoints/stage1", "models/base"])
def test_a_missing_local_model_is_reported_as_a_missing_path(missing, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve in an empty folder, not in a checkout with a run in it
    for load in (load_processor, load_model):
        with pytest.raises(FileNotFoundError, match="no such directory") as error:
            load(missing)
        assert missing in str(error.value) and "repo id" not in str(error.value).lower()


def test_hub_ids_and_directories_pass_the_path_check(model_dir, tmp_path):
    assert check_model_path("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert check_model_path(model_dir) == model_dir
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="file.txt"):
        check_model_path(tmp_path / "file.txt")


def test_a_truncated_weights_file_is_named(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (weights,) = broken.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # what a killed copy leaves
    with pytest.raises(OSError) as error:
        load_model(broken, device="cpu")
    assert str(error.value).startswith(f"{weights}: cannot read the weights") and "\n" not in str(error.value)


def lora_batch(model_dir):
    """A tiny model with LoRA on the LLM (no dropout, so two passes agree), set up as TRL's SFT sets it
    up under LoRA and gradient checkpointing, and one two-image training row."""
    from morelib.model import LoraSettings

    model, processor = load_model(model_dir, device="cpu", dtype="float32", lora=LoraSettings(dropout=0.0))
    model.enable_input_require_grads()  # what TRL's SFTTrainer calls for LoRA + gradient checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    images = [Image.new("RGB", (84, 56), (200, 30, 30)), Image.new("RGB", (56, 56), (20, 90, 200))]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which relation?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "/misc/misc/part_of"}]}]
    text = processor.apply_chat_template(chat, tokenize=False)
    batch = processor(text=[text], images=images, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    return model, batch


def loss_and_grads(model, batch):
    from morelib.model import vision_module

    seen = {}
    visual = vision_module(model)
    hooks = [visual.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("block", o.requires_grad)),
             visual.merger.register_forward_hook(lambda m, i, o: seen.__setitem__("merger", o.requires_grad))]
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, seen


def test_the_frozen_vision_tower_runs_without_grad_and_the_loss_is_unchanged(model_dir):
    import torch

    from morelib.model import vision_module, vision_without_grad

    torch.manual_seed(0)
    model, batch = lora_batch(model_dir)
    before_loss, before_grads, before = loss_and_grads(model, batch)
    # transformers 5.17 hooks the tower's patch_embed too: its activations require grad today.
    assert before == {"block": True, "merger": True}
    assert vision_without_grad(model) and vision_without_grad(model)  # idempotent
    after_loss, after_grads, after = loss_and_grads(model, batch)
    assert after == {"block": False, "merger": False}
    assert after_loss == pytest.approx(before_loss, abs=1e-6)
    assert before_grads.keys() == after_grads.keys() and before_grads and all("lora_" in n for n in after_grads)
    for name, grad in after_grads.items():
        assert torch.allclose(grad, before_grads[name], atol=1e-6), name
    assert not any(p.requires_grad or p.grad is not None for p in vision_module(model).parameters())


def test_a_trainable_vision_tower_keeps_its_gradients(model_dir):
    from morelib.model import vision_without_grad

    model, _ = load_model(model_dir, device="cpu", freeze_vision=False)
    assert not vision_without_grad(model)


def test_attention_kernel_auto_picks_flash_attention_on_a_gpu_that_has_it(capsys, monkeypatch):
    from morelib.model import resolve_attn_implementation

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_attn_implementation("auto", cuda=False) == "sdpa_gqa"  # morelib.attention, CPU only
    assert resolve_attn_implementation("auto", cuda=True, has_flash_attn=True) == "flash_attention_2"
    assert capsys.readouterr().out == ""
    assert resolve_attn_implementation("auto", tag="sft", cuda=True, has_flash_attn=False) == "sdpa"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("[sft] warning: flash-attn is not installed")
    monkeypatch.setenv("LOCAL_RANK", "3")  # the other processes of a launch stay quiet
    resolve_attn_implementation("auto", cuda=True, has_flash_attn=False)
    assert capsys.readouterr().out == ""
    assert resolve_attn_implementation("eager", cuda=True) == "eager"
