"""Qwen2.5-VL image-token arithmetic against the real processor, and the TRL-6401 guard."""

import pytest
from PIL import Image

from morelib.data import load_images, load_split
from morelib.model import load_processor
from morelib.prompts import student_prompt
from morelib.vision_tokens import (
    ImageTokenGuard,
    ImageTokenMismatch,
    PixelLimits,
    check_image_tokens,
    crop_size,
    image_grid,
    image_size,
    image_token_runs,
    image_tokens,
    max_tokens_per_image,
    processor_limits,
    sample_image_sizes,
)

PAPER = PixelLimits(4 * 28 * 28, 16384 * 28 * 28)   # ms-swift 3.8's defaults
CAPPED = PixelLimits(4 * 28 * 28, 256 * 28 * 28)
# Sizes that exercise each branch: exact multiples, rounding up and down, shrinking to
# max_pixels, growing to min_pixels, portrait, tiny crops and extreme (but accepted) ratios.
SIZES = [(1920, 1080), (1080, 1920), (640, 480), (112, 112), (57, 29), (5, 7), (28, 28), (41, 42),
         (300, 2), (1500, 1000), (2000, 11), (1023, 767)]


@pytest.fixture(scope="module")
def world(toy_world):
    """The session's toy data and tiny model (conftest.toy_world)."""
    return toy_world.data_dir, toy_world.model_dir


@pytest.mark.parametrize("limits", [PAPER, CAPPED], ids=["paper", "capped"])
def test_arithmetic_matches_the_processor(world, limits):
    _, model_dir = world
    processor = load_processor(model_dir, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    for width, height in SIZES:
        image = Image.new("RGB", (width, height), (90, 120, 30))
        grid = processor.image_processor(images=[image])["image_grid_thw"][0].tolist()
        assert tuple(grid) == image_grid(width, height, min_pixels=limits.min_pixels,
                                         max_pixels=limits.max_pixels), (width, height)
        text = processor.apply_chat_template(student_prompt_of_one_image(), add_generation_prompt=True, tokenize=False)
        ids = processor(text=[text], images=[image])["input_ids"][0]
        assert image_token_runs(ids, processor.image_token_id) == [limits.tokens(width, height)], (width, height)


def student_prompt_of_one_image():
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which relation?"}]}]


def test_a_1920x1080_photo_costs_about_2700_tokens_uncapped_and_the_cap_bounds_it():
    assert image_tokens(1920, 1080, min_pixels=PAPER.min_pixels, max_pixels=PAPER.max_pixels) == 39 * 69
    capped = image_tokens(1920, 1080, min_pixels=CAPPED.min_pixels, max_pixels=CAPPED.max_pixels)
    assert capped <= max_tokens_per_image(CAPPED.max_pixels) == 256 and capped > 200
    assert image_tokens(10, 10, min_pixels=3136, max_pixels=12544) == 4  # grown to the minimum


def test_elongated_images_are_refused_like_the_processor_does(world):
    _, model_dir = world
    processor = load_processor(model_dir)
    with pytest.raises(ValueError, match="aspect ratio"):
        processor.image_processor(images=[Image.new("RGB", (1000, 3))])
    with pytest.raises(ValueError, match="aspect ratio"):
        image_tokens(1000, 3, min_pixels=3136, max_pixels=12544)


def test_sizes_from_headers_and_crops_match_the_loaded_images(world):
    data_dir, _ = world
    cache = {}
    for sample in load_split(data_dir, "train")[:10]:
        full, crop = load_images(sample)
        assert image_size(sample.image_path) == full.size
        assert crop_size(*full.size, sample.box) == crop.size
        assert sample_image_sizes(sample, cache) == (full.size, crop.size)
    assert len(cache) >= 1


def two_image_batch(world, limits, n=3):
    """Prompt ids of ``n`` samples (two images each) as TRL's GRPO tokenizes them, with their images."""
    data_dir, model_dir = world
    processor = load_processor(model_dir, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels)
    samples = load_split(data_dir, "train")[:n]
    images = [list(load_images(s)) for s in samples]
    # Different sizes per prompt, as on the real data (the toy's images are all 112x112).
    images = [[full.resize((300 + 50 * i, 200 + 20 * i)), crop] for i, (full, crop) in enumerate(images)]
    texts = [processor.apply_chat_template(student_prompt(s), add_generation_prompt=True, tokenize=False)
             for s in samples]
    out = processor(text=texts, images=[im for pair in images for im in pair], padding=True)
    ids = [[t for t, m in zip(row, mask) if m] for row, mask in zip(out["input_ids"], out["attention_mask"])]
    return processor, ids, images, out["image_grid_thw"]


def test_guard_accepts_prompts_expanded_with_the_same_limits(world):
    processor, ids, images, grid = two_image_batch(world, CAPPED)
    assert check_image_tokens(ids, processor.image_token_id, images, grid, processor_limits(processor)) == 6
    assert check_image_tokens(ids, processor.image_token_id, image_grid_thw=grid) == 6
    sizes = [[im.size for im in pair] for pair in images]  # (width, height) pairs work as well as images
    assert check_image_tokens(ids, processor.image_token_id, sizes, limits=CAPPED) == 6


def test_guard_fails_loudly_when_the_other_pipeline_uses_other_limits(world):
    processor, ids, images, grid = two_image_batch(world, CAPPED)
    vllm_limits = PixelLimits(CAPPED.min_pixels, 64 * 28 * 28)  # e.g. vLLM given another max_pixels
    with pytest.raises(ImageTokenMismatch, match=r"prompt \d, image \d \(\d+x\d+\): \d+ image tokens .*TRL issue 6401"):
        check_image_tokens(ids, processor.image_token_id, images, grid, vllm_limits)


def test_guard_fails_on_corrupted_prompt_ids(world):
    processor, ids, images, grid = two_image_batch(world, CAPPED)
    token = processor.image_token_id
    shortened = [list(row) for row in ids]
    shortened[1].remove(token)  # one image token fewer in the second prompt
    with pytest.raises(ImageTokenMismatch, match="prompt 1, image 0"):
        check_image_tokens(shortened, token, images, grid, CAPPED)
    merged = [list(row) for row in ids]
    first = merged[0].index(token)
    runs = image_token_runs(merged[0], token)
    # Drop the tokens between the two runs: two images now look like one run.
    end_first = first + runs[0]
    next_run = merged[0].index(token, end_first)
    merged[0] = merged[0][:end_first] + merged[0][next_run:]
    with pytest.raises(ImageTokenMismatch, match="prompt 0: 1 runs of image tokens for 2 images"):
        check_image_tokens(merged, token, images, limits=CAPPED)
    with pytest.raises(ImageTokenMismatch, match="grid"):
        check_image_tokens(shortened, token, image_grid_thw=grid)


def test_guard_runs_on_the_first_batch_and_every_nth(world):
    processor, ids, images, grid = two_image_batch(world, CAPPED)
    guard = ImageTokenGuard.for_processor(processor, every=3)
    assert guard.limits == CAPPED
    assert [guard(ids, images, grid) for _ in range(7)] == [True, False, False, True, False, False, True]
    assert guard.checks == 3
    off = ImageTokenGuard.for_processor(processor, every=0)
    assert not off(ids, images, grid) and off.checks == 0
    strict = ImageTokenGuard.for_processor(processor, every=1, limits=PixelLimits(3136, 64 * 28 * 28))
    with pytest.raises(ImageTokenMismatch):
        strict(ids, images, grid)


def test_guard_runs_inside_trls_grpo_trainer(world, tmp_path):
    """The hook sits where TRL 1.16 tokenizes a batch before handing it to vLLM or transformers."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.data_utils import prepare_multimodal_messages

    from morelib.model import load_model
    from morelib.vision_tokens import with_image_token_guard

    data_dir, model_dir = world
    model, processor = load_model(model_dir, device="cpu", min_pixels=CAPPED.min_pixels, max_pixels=CAPPED.max_pixels)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1,
                      max_completion_length=4, report_to="none", use_cpu=True)
    dataset = Dataset.from_dict({"prompt": ["unused"] * 2})
    trainer = with_image_token_guard(GRPOTrainer)(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                                  args=args, train_dataset=dataset, processing_class=processor)
    samples = load_split(data_dir, "train")[:2]
    prompts = [prepare_multimodal_messages(student_prompt(s), images=[im.resize((280 + 28 * i, 196)), crop])
               for i, (s, (im, crop)) in enumerate((s, load_images(s)) for s in samples)]
    ids, images, fields = trainer._tokenize_prompts(prompts)  # no guard set: TRL's own behaviour
    assert len(ids) == 2 and len(images[0]) == 2
    trainer.image_token_guard = ImageTokenGuard.for_processor(processor, every=1)
    trainer._tokenize_prompts(prompts)
    assert trainer.image_token_guard.checks == 1
    # vLLM would read other limits from the model directory: the batch is refused before generation.
    trainer.image_token_guard = ImageTokenGuard.for_processor(processor, every=1, limits=PixelLimits(3136, 40 * 28 * 28))
    with pytest.raises(ImageTokenMismatch, match="TRL issue 6401"):
        trainer._tokenize_prompts(prompts)
