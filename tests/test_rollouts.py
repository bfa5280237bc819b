"""GRPO rollouts through TRL 1.16's colocated vLLM engine, with a fake vLLM that updates multimodal
token prompts as vLLM 0.31 does for Qwen2.5-VL (tests/fake_vllm.py).

TRL's own path sends vLLM prompt ids whose image tokens are already expanded, and vLLM expands
them again; ``morelib.rollouts`` sends one placeholder per image and checks what vLLM returns."""

import pytest

from fake_vllm import install
from morelib.data import load_images, load_split
from morelib.prompts import student_prompt
from morelib.rollouts import (
    LIMIT_MM_PER_PROMPT,
    VLLMPromptMismatch,
    check_returned_prompts,
    collapse_image_runs,
    engine_kwargs,
    with_vllm_rollouts,
)
from morelib.vision_tokens import ImageTokenGuard, PixelLimits, image_token_runs, with_image_token_guard

LIMITS = PixelLimits(4 * 28 * 28, 256 * 28 * 28)


def make_trainer(trainer_cls, model_dir, tmp_path, limits=LIMITS, **kwargs):
    """A GRPO trainer on the tiny model with colocated (fake) vLLM; ``limits=None`` keeps the model's own."""
    from datasets import Dataset
    from trl import GRPOConfig

    from morelib.model import load_model

    pixels = {} if limits is None else {"min_pixels": limits.min_pixels, "max_pixels": limits.max_pixels}
    model, processor = load_model(model_dir, device="cpu", **pixels)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1,
                      max_completion_length=4, report_to="none", use_cpu=True, use_vllm=True, vllm_mode="colocate",
                      vllm_max_model_length=4096)
    dataset = Dataset.from_dict({"prompt": ["unused"] * 2})
    trainer = trainer_cls(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=dataset, processing_class=processor, **kwargs)
    return trainer, processor


def two_image_prompts(data_dir):
    """Two prompts of two images each, of different sizes (the real data's are)."""
    from trl.data_utils import prepare_multimodal_messages

    samples = load_split(data_dir, "train")[:2]
    prompts = []
    for i, sample in enumerate(samples):
        full, crop = load_images(sample)
        prompts.append(prepare_multimodal_messages(student_prompt(sample), images=[full.resize((336 + 56 * i, 224)), crop]))
    return prompts


def test_collapse_keeps_one_placeholder_per_run():
    assert collapse_image_runs([1, 9, 9, 9, 2, 3, 9, 9, 4], 9) == [1, 9, 2, 3, 9, 4]
    assert collapse_image_runs([1, 2], 9) == [1, 2]


def test_trls_own_colocate_path_expands_the_image_tokens_twice(toy_world, tmp_path, monkeypatch):
    """Today's code (TRL's trainer with the count guard): vLLM generates from a corrupted prompt, even
    with the pixel limits the same on both sides (the model directory's own, which vLLM reads)."""
    from trl import GRPOTrainer

    fake = install(monkeypatch)
    trainer, processor = make_trainer(with_image_token_guard(GRPOTrainer), toy_world.model_dir, tmp_path, limits=None)
    trainer.image_token_guard = ImageTokenGuard.for_processor(processor, every=1)
    prompts = two_image_prompts(toy_world.data_dir)
    ids, images, _ = trainer._tokenize_prompts(prompts)
    trainer._generate(prompts)
    assert trainer.image_token_guard.checks == 2  # the count guard passes: both of its sides are the trainer's
    token = processor.image_token_id
    (llm,) = fake.built
    assert "limit_mm_per_prompt" not in llm.kwargs and llm.kwargs["max_num_batched_tokens"] == 4096  # TRL's own
    for ours, prompt_images, request in zip(ids, images, llm.requests):
        first, second = image_token_runs(ours, token)
        assert request["sent"] == list(ours)  # TRL sends the expanded ids ...
        # ... and vLLM replaces one pad per image inside the first run: both images land there.
        assert image_token_runs(request["expanded"], token) == [first + second + first - 2, second]
        assert len(request["expanded"]) == len(ours) + first + second - 2
        with pytest.raises(VLLMPromptMismatch, match=r"prompt 0 \(images \d+x\d+, \d+x\d+\): vLLM generated from "
                                                      rf"{len(request['expanded'])} prompt tokens but the trainer scores {len(ours)}"):
            check_returned_prompts([ours], [request["expanded"]], [prompt_images], token)


def test_our_trainer_sends_one_placeholder_per_image_and_vllm_expands_once(toy_world, tmp_path, monkeypatch):
    from trl import GRPOTrainer

    fake = install(monkeypatch)
    options = {"limit_mm_per_prompt": dict(LIMIT_MM_PER_PROMPT), "max_num_batched_tokens": 8192,
               "mm_processor_kwargs": {"min_pixels": LIMITS.min_pixels, "max_pixels": LIMITS.max_pixels}}
    trainer_cls = with_vllm_rollouts(with_image_token_guard(GRPOTrainer), options, check_every=2)
    trainer, processor = make_trainer(trainer_cls, toy_world.model_dir, tmp_path)
    (llm,) = fake.built
    # Our engine settings reach TRL's LLM(...); TRL's own arguments stay.
    assert llm.kwargs["limit_mm_per_prompt"] == {"image": 2, "video": 0}
    assert llm.kwargs["max_num_batched_tokens"] == 8192 and llm.kwargs["mm_processor_kwargs"]["max_pixels"] == LIMITS.max_pixels
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher" and llm.kwargs["max_model_len"] == 4096
    prompts = two_image_prompts(toy_world.data_dir)
    ids, _, _ = trainer._tokenize_prompts(prompts)
    token = processor.image_token_id
    for _ in range(3):
        trainer._generate(prompts)
    for ours, request in zip(ids, llm.requests):
        assert image_token_runs(request["sent"], token) == [1, 1]
        assert request["expanded"] == list(ours)
    generation = trainer.vllm_generation
    assert (generation.calls, generation.checks) == (3, 2)  # batches 1 and 3
    # The class TRL uses is only replaced while the trainer is built.
    import trl.trainer.grpo_trainer as grpo_trainer
    from trl.generation.vllm_generation import VLLMGeneration
    assert grpo_trainer.VLLMGeneration is VLLMGeneration


def test_a_prompt_vllm_expands_differently_stops_the_run(toy_world, tmp_path, monkeypatch):
    """vLLM given other pixel limits than the trainer: the returned ids differ, and the run stops."""
    from trl import GRPOTrainer

    install(monkeypatch)
    options = {"mm_processor_kwargs": {"min_pixels": LIMITS.min_pixels, "max_pixels": 64 * 28 * 28}}
    trainer, _ = make_trainer(with_vllm_rollouts(GRPOTrainer, options), toy_world.model_dir, tmp_path)
    prompts = two_image_prompts(toy_world.data_dir)
    with pytest.raises(VLLMPromptMismatch, match=r"prompt 0 \(images 336x224, \d+x\d+\): vLLM generated from \d+ prompt "
                                                  r"tokens but the trainer scores \d+"):
        trainer._generate(prompts)


def test_engine_kwargs_come_from_the_settings():
    from morelib.config import load_settings

    grpo = load_settings("05_grpo", "paper", ["05_grpo.vllm_max_num_batched_tokens=12288"])
    assert engine_kwargs(grpo) == {"limit_mm_per_prompt": {"image": 2, "video": 0}, "max_num_batched_tokens": 12288,
                                   "mm_processor_kwargs": {"min_pixels": 3136, "max_pixels": 12845056}}
