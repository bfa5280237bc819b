"""A tiny, randomly initialised Qwen2.5-VL built offline, for the toy profile.

``python -m morelib.tiny OUT_DIR --data DATA_DIR [--seed S]`` writes the standard Hugging Face
layout (config.json, model.safetensors, generation_config.json, tokenizer files, chat template,
preprocessor_config.json), so the same code that reads ``Qwen/Qwen2.5-VL-7B-Instruct`` reads it.

Parts, and why they look the way they do:
- the real ``Qwen2_5_VLForConditionalGeneration`` class, only smaller, so every later stage runs
  the real vision tower, projector (merger), M-RoPE and generation code;
- a byte-level BPE tokenizer trained on the toy text plus the prompt template and the reasoning
  vocabulary, carrying Qwen2.5-VL's special tokens (the processor and model look them up by name);
- an image processor sized for the toy's 112x112 images: patch 14 and merge 2 as in the real
  model, so a full image becomes 4x4 = 16 merged tokens and a small crop 2x2 = 4;
- no video processor: transformers cannot build Qwen2.5-VL's video processor without
  torchvision, and the task has no video.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morelib.files import write_json
from morelib.labels import ENTITY_TYPES, RELATIONS
from morelib.prompts import TASK_TEMPLATE_PATH

# Qwen2.5-VL's added tokens, in the release's order (the names are what the code looks up).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Renders a conversation the way Qwen2.5-VL's template does: a default system turn, each image
# as <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to the right
# number of image tokens), text parts verbatim, and an opened assistant turn on request.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the student and the expert use while reasoning; trained into the vocabulary so the
# tiny model spends few tokens on them.
REASONING_WORDS = (
    "<think> </think> <answer> </answer> Step 1: Step 2: Step 3: Step 4: Step 5: Step 6: "
    "The image shows the object in the crop. The text mentions the entity. "
    "Image-text relevance: the object is related to the text. Cross-modal alignment. "
    "Entity types: the object is a per org loc misc; the entity is a per org loc misc. "
    "Candidate relations for this type pair: none. Final decision: the relation is none. "
    "person organization location miscellaneous object entity relation type pair candidate"
)

# Qwen2's pre-tokenizer split: contractions, letter runs, single digits, punctuation, spaces.
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class TinySettings:
    """Sizes of the tiny model. Defaults give about 1M parameters."""

    vocab_size: int = field(default=1536, metadata={
        "help": "BPE vocabulary size including the special tokens (the trainer may stop earlier)"})
    hidden_size: int = field(default=128, metadata={"help": "LLM hidden size"})
    num_hidden_layers: int = field(default=2, metadata={"help": "LLM decoder layers"})
    num_attention_heads: int = field(default=4, metadata={"help": "LLM attention heads (head dim = hidden_size / heads)"})
    num_key_value_heads: int = field(default=2, metadata={
        "help": "LLM key/value heads (grouped-query attention as in Qwen2.5)"})
    intermediate_size: int = field(default=512, metadata={"help": "LLM MLP width"})
    vision_depth: int = field(default=2, metadata={"help": "vision transformer blocks"})
    vision_hidden_size: int = field(default=32, metadata={"help": "vision transformer width"})
    vision_heads: int = field(default=2, metadata={"help": "vision attention heads"})
    vision_intermediate_size: int = field(default=64, metadata={"help": "vision MLP width"})
    min_pixels: int = field(default=56 * 56, metadata={
        "help": "smallest image area after resizing: a crop becomes at least 2x2 merged tokens"})
    max_pixels: int = field(default=112 * 112, metadata={
        "help": "largest image area after resizing: the 112x112 toy image becomes 4x4 merged tokens"})
    max_position_embeddings: int = field(default=4096, metadata={
        "help": "longest sequence the rotary tables are built for"})


def read_corpus(data_dir: str | Path) -> list[str]:
    """Headlines and object names of every split of a MORE-layout directory (read by ``morelib.data``)."""
    from morelib.data import load_split

    txt_files = sorted(Path(data_dir, "txt").glob("*.txt"))
    if not txt_files:
        raise FileNotFoundError(f"{Path(data_dir, 'txt')}: no *.txt files to train the tokenizer on")
    return [text for path in txt_files for s in load_split(data_dir, path.stem)
            for text in (s.text, s.object_name)]


def fixed_vocabulary_text() -> list[str]:
    """Text that every prompt and answer contains, whatever the data: template, labels, reasoning."""
    template = TASK_TEMPLATE_PATH.read_text()
    labels = ", ".join(RELATIONS)
    return [
        template,
        labels,
        " ".join(ENTITY_TYPES),
        REASONING_WORDS,
        f"system\n{DEFAULT_SYSTEM_PROMPT}\nuser\nassistant\n",
    ] + [f"<answer>{label}</answer>" for label in RELATIONS]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (Qwen-style pre-tokenization) with the Qwen2.5-VL special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Added after training so they sit at the end of the vocabulary, as in Qwen's release.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        padding_side="left",
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def image_processor(settings: TinySettings):
    """Qwen2-VL's PIL image processor (no torchvision) with the real patch/merge sizes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        min_pixels=settings.min_pixels,
        max_pixels=settings.max_pixels,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )


def model_config(settings: TinySettings, tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    head_dim = settings.hidden_size // settings.num_attention_heads
    # M-RoPE splits the rotary half-dimension into (time, height, width) sections, like Qwen's 16/24/24.
    half = head_dim // 2
    t_section = half // 4
    hw_section = (half - t_section) // 2
    mrope_section = [t_section, hw_section, half - t_section - hw_section]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": settings.hidden_size,
            "intermediate_size": settings.intermediate_size,
            "num_hidden_layers": settings.num_hidden_layers,
            "num_attention_heads": settings.num_attention_heads,
            "num_key_value_heads": settings.num_key_value_heads,
            "max_position_embeddings": settings.max_position_embeddings,
            "max_window_layers": settings.num_hidden_layers,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": settings.vision_depth,
            "hidden_size": settings.vision_hidden_size,
            "intermediate_size": settings.vision_intermediate_size,
            "num_heads": settings.vision_heads,
            "out_hidden_size": settings.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [settings.vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | Path, data_dir: str | Path, seed: int = 0, settings: TinySettings | None = None,
                     extra_texts: list[str] = ()) -> Path:
    """Build and save the tiny model; returns ``out_dir``. Same inputs give identical files.

    ``extra_texts`` join the tokenizer's training text (``morelib.pretrain`` adds its corpus's answers).
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    settings = settings or TinySettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(read_corpus(data_dir) + list(extra_texts) + fixed_vocabulary_text(), settings.vocab_size)
    config = model_config(settings, tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)

    # The processor's parts saved separately, as in the Qwen2.5-VL-7B-Instruct release.
    tokenizer.save_pretrained(out_dir)
    image_processor(settings).save_pretrained(out_dir)
    _add_processor_class(out_dir / "preprocessor_config.json")
    write_json(out_dir / "tiny_settings.json", {"seed": seed, **asdict(settings)})
    return out_dir


def _add_processor_class(path: Path) -> None:
    """Name the processor class the way the 7B release does, so ``AutoProcessor`` finds it."""
    config = json.loads(path.read_text())
    config["processor_class"] = "Qwen2_5_VLProcessor"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def parameter_count(model) -> dict[str, int]:
    visual = sum(p.numel() for p in model.model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "vision_and_projector": visual, "llm": total - visual}


def _build_command(args) -> int:
    from morelib import cli
    from morelib.model import load_model

    data_dir = Path(args.data).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    out = build_tiny_model(args.out_dir, data_dir, args.seed, cli.settings(args, TinySettings))
    model, processor = load_model(out, freeze_vision=False)
    print(f"tiny Qwen2.5-VL written to {out}: vocab {len(processor.tokenizer)}, parameters {parameter_count(model)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m morelib.tiny OUT_DIR --data DATA_DIR``: build the tiny model."""
    from morelib import cli

    parser = cli.make_parser("python -m morelib.tiny", __doc__.splitlines()[0], [TinySettings])
    parser.add_argument("out_dir", type=Path, help="where to write the model (created if missing)")
    parser.add_argument("--data", type=Path, required=True,
                        help="MORE-layout directory whose txt/ trains the tokenizer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return cli.run(parser, argv, _build_command)


if __name__ == "__main__":
    sys.exit(main())
