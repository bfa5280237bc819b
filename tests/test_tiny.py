"""The tiny Qwen2.5-VL: deterministic build, HF layout round trip, two-image generation, and
what ``load_model`` freezes or adapts."""

import hashlib

import pytest
import torch

from conftest import TINY_SIZES
from morelib.data import load_images, load_split
from morelib.inference import GenerationSettings, TransformersBackend
from morelib.model import LoraSettings, load_model, load_processor
from morelib.prompts import student_prompt
from morelib.tiny import SPECIAL_TOKENS, TinySettings, build_tiny_model

SMALL = TinySettings(**TINY_SIZES)  # the session's tiny model (conftest.toy_world): seed 0, these sizes


@pytest.fixture(scope="module")
def world(toy_world):
    """The session's toy data and tiny model (read-only: tests write into their tmp_path)."""
    return toy_world.data_dir, toy_world.model_dir


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(world, tmp_path):
    data_dir, model_dir = world
    again = build_tiny_model(tmp_path / "again", data_dir, seed=0, settings=SMALL)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert digest(again / name) == digest(model_dir / name), name
    other_seed = build_tiny_model(tmp_path / "seed1", data_dir, seed=1, settings=SMALL)
    assert digest(other_seed / "model.safetensors") != digest(model_dir / "model.safetensors")


def test_tokenizer_has_qwen_tokens_and_template(world):
    _, model_dir = world
    processor = load_processor(model_dir)
    tok = processor.tokenizer
    assert 300 < len(tok) <= SMALL.vocab_size
    for name in SPECIAL_TOKENS:
        assert len(tok.encode(name, add_special_tokens=False)) == 1, name
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Hi"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    plain = processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert plain.endswith("Hi<|im_end|>\n")
    answer = "<think> Step 1: x </think> <answer>/per/org/member_of</answer>"
    assert tok.decode(tok.encode(answer, add_special_tokens=False)) == answer


def test_image_sizes_give_few_tokens(world):
    _, model_dir = world
    image_processor = load_processor(model_dir).image_processor
    from PIL import Image

    sizes = [(112, 112), (28, 28), (30, 40)]  # full toy image, square crop, oblong crop
    grids = image_processor([Image.new("RGB", size) for size in sizes], return_tensors="pt")["image_grid_thw"]
    merged = (grids.prod(-1) // 4).tolist()
    assert merged[:2] == [16, 4] and 4 <= merged[2] <= 6


def test_round_trip_gives_same_logits(world, tmp_path):
    data_dir, model_dir = world
    model, processor = load_model(model_dir, dtype="float32", device="cpu")
    sample = load_split(data_dir, "test")[0]
    inputs = TransformersBackend(model, processor).encode([sample])
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path / "copy")
    processor.save_pretrained(tmp_path / "copy")  # as a trainer saves a checkpoint
    reloaded, reloaded_processor = load_model(tmp_path / "copy", dtype="float32", device="cpu")
    assert TransformersBackend(reloaded, reloaded_processor).encode([sample])["input_ids"].equal(inputs["input_ids"])
    with torch.no_grad():
        after = reloaded(**inputs).logits
    assert before.shape[-1] == len(processor.tokenizer)
    assert torch.equal(before, after)


def test_two_image_generate(world):
    data_dir, model_dir = world
    model, processor = load_model(model_dir, device="cpu")
    sample = load_split(data_dir, "test")[0]
    full, crop = load_images(sample)
    text = processor.apply_chat_template(student_prompt(sample), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[[full, crop]], return_tensors="pt")
    assert inputs["image_grid_thw"].shape[0] == 2
    n_image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum().item()
    assert n_image_tokens == (inputs["image_grid_thw"].prod(-1) // 4).sum().item()
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    [generation] = TransformersBackend(model, processor).generate([sample], GenerationSettings(max_new_tokens=8))
    assert 1 <= generation.completion_tokens <= 8 and generation.prompt_tokens == inputs["input_ids"].shape[1]


def test_load_model_freezes_vision_tower_and_projector(world):
    _, model_dir = world
    model, _ = load_model(model_dir, device="cpu")
    visual = dict(model.model.visual.named_parameters())
    assert any(name.startswith("merger.") for name in visual)
    assert not any(p.requires_grad for p in visual.values())
    assert all(p.requires_grad for p in model.model.language_model.parameters())
    assert model.lm_head.weight.requires_grad

    data_dir = world[0]
    inputs = TransformersBackend(model, load_processor(model_dir)).encode(load_split(data_dir, "test")[:2])
    model(**inputs).logits.float().pow(2).mean().backward()
    assert all(p.grad is None for p in visual.values())
    assert model.model.language_model.layers[0].self_attn.q_proj.weight.grad is not None

    unfrozen, _ = load_model(model_dir, device="cpu", freeze_vision=False)
    assert all(p.requires_grad for p in unfrozen.model.visual.parameters())


def test_lora_touches_only_the_llm(world):
    _, model_dir = world
    model, _ = load_model(model_dir, device="cpu", lora=LoraSettings(r=4, alpha=8))
    lora_modules = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    assert lora_modules and all("language_model.layers" in name for name in lora_modules)
    assert not any("visual" in name for name in lora_modules)
    kinds = {name.rsplit(".", 1)[-1] for name in lora_modules}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_a_lora_checkpoint_loads_merged(world, tmp_path):
    data_dir, model_dir = world
    peft_model, processor = load_model(model_dir, dtype="float32", device="cpu", lora=LoraSettings(r=4, alpha=8))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the output
            param.data.normal_(0, 0.5)
    peft_model.eval()
    inputs = TransformersBackend(peft_model, processor).encode(load_split(data_dir, "test")[:1])
    with torch.no_grad():
        expected = peft_model(**inputs).logits
    peft_model.save_pretrained(tmp_path / "adapter")  # adapter_config.json names the base model
    processor.save_pretrained(tmp_path / "adapter")
    merged, _ = load_model(tmp_path / "adapter", dtype="float32", device="cpu")
    assert not hasattr(merged, "peft_config")
    with torch.no_grad():
        got = merged(**inputs).logits
    base, _ = load_model(model_dir, dtype="float32", device="cpu")
    with torch.no_grad():
        assert not torch.allclose(base(**inputs).logits, expected, atol=1e-3)
    assert torch.allclose(got, expected, atol=1e-4)


def test_cli_builds_the_same_model_and_fails_in_one_line(world, tmp_path, capsys):
    from morelib import tiny

    data_dir, model_dir = world
    with pytest.raises(SystemExit) as info:
        tiny.main(["--help"])
    assert info.value.code == 0 and "--num_hidden_layers" in capsys.readouterr().out
    argv = [str(tmp_path / "cli"), "--data", str(data_dir), "--seed", "0",
            *(option for name, value in TINY_SIZES.items() for option in (f"--{name}", str(value)))]
    assert tiny.main(argv) == 0
    assert "tiny Qwen2.5-VL written to" in capsys.readouterr().out
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(tmp_path / "cli" / name) == digest(model_dir / name), name
    assert tiny.main([str(tmp_path / "x"), "--data", str(tmp_path / "no-data")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'no-data'}: no such data directory\n"
    (tmp_path / "empty" / "txt").mkdir(parents=True)
    assert tiny.main([str(tmp_path / "x"), "--data", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty' / 'txt'}: no *.txt files to train the tokenizer on\n"
