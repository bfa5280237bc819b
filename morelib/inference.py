"""Batched generation for every stage: the two images + the student prompt -> text, label, token counts.

One function, ``generate(backend, samples, settings)``, with three backends:
- ``TransformersBackend``: in-process, batched, left-padded ``model.generate`` (the default);
- ``VLLMBackend``: vLLM's offline engine on GPU servers (imported lazily; not runnable here);
- ``OpenAIBackend``: any OpenAI-compatible server (e.g. ``vllm serve``) through the ``openai`` client.

Greedy decoding (temperature 0) is what evaluation uses; temperature > 0 samples. Labels are parsed
with ``morelib.answer.parse_label``, the parser the rewards use; an unparsable output gets label None.

``predict_to_file`` writes the run directory's prediction JSONL and resumes: ids already in the file
are skipped, each batch is appended and flushed.

CLI: ``python -m morelib.inference --model PATH --data DATA_DIR --split test --out FILE``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from morelib.answer import parse_label
from morelib.data import load_images, load_split
from morelib.prompts import student_prompt, task_description

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """How to decode."""

    max_new_tokens: int = 512
    """Longest completion, in tokens."""
    temperature: float = 0.0
    """0 = greedy (evaluation); > 0 samples (exploration)."""
    top_p: float = 1.0
    """Nucleus sampling mass (used only when sampling)."""
    batch_size: int = 16
    """Samples per generate call (transformers, vLLM) or concurrent requests (OpenAI)."""
    seed: int = 0
    """Seed for sampling, so a sampled run can be repeated."""


@dataclass
class Generation:
    """One backend output."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        """Outputs for ``samples``, in order; ``len(samples)`` is at most ``settings.batch_size``."""


# ----------------------------------------------------------------------------- backends


class TransformersBackend:
    """In-process generation with a loaded model and processor (``morelib.model.load_model``)."""

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    @classmethod
    def from_path(cls, path: str | Path, dtype: str = "auto", device: str | None = None):
        from morelib.model import load_model

        model, processor = load_model(path, dtype=dtype, device=device)
        return cls(model.eval(), processor)

    def encode(self, samples: Sequence, template: str | None = None):
        """Left-padded model inputs for a batch: chat-templated prompts plus [full image, crop] each."""
        tokenizer = self.processor.tokenizer
        texts = [
            self.processor.apply_chat_template(student_prompt(s, template), add_generation_prompt=True, tokenize=False)
            for s in samples
        ]
        images = [list(load_images(s)) for s in samples]
        # Generation appends at the right end, so every prompt must end in the same column.
        previous, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            return self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = previous

    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        import torch

        tokenizer = self.processor.tokenizer
        inputs = self.encode(samples, template).to(self.model.device)
        sampling = settings.temperature > 0
        if sampling:
            torch.manual_seed(settings.seed)
        eos_ids = _eos_ids(self.model, tokenizer)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                do_sample=sampling,
                temperature=settings.temperature if sampling else None,
                top_p=settings.top_p if sampling else None,
                top_k=0 if sampling else None,  # no top-k cut: temperature and top-p only, as in vLLM
                eos_token_id=eos_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        completions = out[:, inputs["input_ids"].shape[1]:]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, n_prompt in zip(completions.tolist(), prompt_lengths):
            n_completion = _completion_length(row, eos_ids)
            text = tokenizer.decode(row[:n_completion], skip_special_tokens=True)
            results.append(Generation(text=text, prompt_tokens=int(n_prompt), completion_tokens=n_completion))
        return results


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return ids or [tokenizer.eos_token_id]


def _completion_length(row: list[int], eos_ids: list[int]) -> int:
    """Tokens generated up to and including the first end token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return i + 1
    return len(row)


class VLLMBackend:
    """vLLM's offline engine (GPU servers only; vLLM is imported when the backend is built)."""

    def __init__(self, model_path: str | Path, **engine_kwargs):
        from vllm import LLM

        from morelib.model import load_processor

        self.processor = load_processor(model_path)
        engine_kwargs.setdefault("limit_mm_per_prompt", {"image": 2})
        self.llm = LLM(model=str(model_path), **engine_kwargs)

    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed if settings.temperature > 0 else None,
        )
        requests = [
            {
                # The same chat rendering as the transformers backend; vLLM expands each image pad.
                "prompt": self.processor.apply_chat_template(
                    student_prompt(s, template), add_generation_prompt=True, tokenize=False
                ),
                "multi_modal_data": {"image": list(load_images(s))},
            }
            for s in samples
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            Generation(
                text=o.outputs[0].text,
                prompt_tokens=len(o.prompt_token_ids),
                completion_tokens=len(o.outputs[0].token_ids),
            )
            for o in outputs
        ]


class OpenAIBackend:
    """Any OpenAI-compatible chat server; images travel as base64 PNG data URLs.

    The API key is read from the environment variable ``api_key_env`` (servers such as
    ``vllm serve`` accept any key, so a missing variable falls back to ``"EMPTY"``).
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600.0):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env, "EMPTY"), timeout=timeout)
        self.model = model

    def messages(self, sample, template: str | None = None) -> list[dict]:
        images = [{"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in load_images(sample)]
        return [{"role": "user", "content": images + [{"type": "text", "text": task_description(sample, template)}]}]

    def _one(self, sample, settings: GenerationSettings, template: str | None) -> Generation:
        extra = {"seed": settings.seed} if settings.temperature > 0 else {}
        response = self.client.chat.completions.create(
            model=self.model,
            messages=self.messages(sample, template),
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else 1.0,
            max_tokens=settings.max_new_tokens,
            **extra,
        )
        usage = response.usage
        return Generation(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, min(len(samples), settings.batch_size))) as pool:
            return list(pool.map(lambda s: self._one(s, settings, template), samples))


def image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


BACKENDS = ("transformers", "vllm", "openai")


def make_backend(
    model: str | Path,
    backend: str = "transformers",
    dtype: str = "auto",
    device: str | None = None,
    base_url: str | None = None,
    served_model_name: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    **vllm_kwargs,
) -> Backend:
    """A backend by name. For ``openai``, ``model`` is the served model's name unless given apart."""
    if backend == "transformers":
        return TransformersBackend.from_path(model, dtype=dtype, device=device)
    if backend == "vllm":
        return VLLMBackend(model, dtype=dtype, **vllm_kwargs)
    if backend == "openai":
        if not base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://localhost:8000/v1)")
        return OpenAIBackend(base_url, served_model_name or str(model), api_key_env=api_key_env)
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def as_backend(model_or_backend) -> Backend:
    """Accept a backend, a ``(model, processor)`` pair, or a model path (transformers backend)."""
    if hasattr(model_or_backend, "generate") and not hasattr(model_or_backend, "config"):
        return model_or_backend
    if isinstance(model_or_backend, tuple) and len(model_or_backend) == 2:
        return TransformersBackend(*model_or_backend)
    if isinstance(model_or_backend, (str, Path)):
        return make_backend(model_or_backend)
    raise TypeError(f"expected a backend, a (model, processor) pair or a path, got {type(model_or_backend).__name__}")


# ----------------------------------------------------------------------------- predictions


@dataclass
class Prediction:
    """One row of ``predictions/<model>__<split>.jsonl``."""

    id: str
    gold: str
    text: str
    label: str | None
    prompt_tokens: int
    completion_tokens: int


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def generate(model_or_backend, samples: Sequence, settings: GenerationSettings | None = None,
             template: str | None = None) -> list[Prediction]:
    """Predictions for ``samples`` (in order), batch by batch."""
    settings = settings or GenerationSettings()
    backend = as_backend(model_or_backend)
    predictions: list[Prediction] = []
    for batch in batches(samples, settings.batch_size):
        predictions.extend(_predict_batch(backend, batch, settings, template))
    return predictions


def _predict_batch(backend: Backend, batch: Sequence, settings: GenerationSettings, template: str | None) -> list[Prediction]:
    outputs = backend.generate(batch, settings, template)
    if len(outputs) != len(batch):
        raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(batch)} samples")
    return [
        Prediction(id=s.id, gold=s.label, text=o.text, label=parse_label(o.text),
                   prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens)
        for s, o in zip(batch, outputs)
    ]


def read_predictions(path: str | Path, repair_tail: bool = False) -> list[dict]:
    """Rows of a prediction file. A torn last line (a run killed mid-write) is dropped when
    ``repair_tail`` (and cut from the file); any other broken line is an error naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    rows = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "id" not in row:
                raise ValueError("missing field 'id'")
        except ValueError as err:
            if repair_tail and line_no == len(lines):
                log.warning("%s:%d: dropping a torn last line (%s)", path, line_no, err)
                path.write_text("".join(lines[:-1]))
                break
            raise ValueError(f"{path}:{line_no}: field 'id': cannot read prediction row ({err})") from err
        rows.append(row)
    return rows


def predict_to_file(model_or_backend, samples: Sequence, out_path: str | Path,
                    settings: GenerationSettings | None = None, template: str | None = None,
                    progress: bool = True) -> list[dict]:
    """Predict ``samples`` into the JSONL ``out_path``, skipping ids already there.

    Each batch is appended and flushed, so a killed run loses at most one batch. Returns the
    rows for ``samples`` (in their order), old and new.
    """
    settings = settings or GenerationSettings()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = {row["id"]: row for row in read_predictions(out_path, repair_tail=True)}
    todo = [s for s in samples if s.id not in done]
    if progress:
        print(f"{out_path}: {len(samples) - len(todo)} of {len(samples)} already predicted, {len(todo)} to go",
              flush=True)
    if todo:
        backend = as_backend(model_or_backend)
        _ensure_newline_at_end(out_path)
        with open(out_path, "a", encoding="utf-8") as f:
            for i, batch in enumerate(batches(todo, settings.batch_size)):
                for prediction in _predict_batch(backend, batch, settings, template):
                    row = asdict(prediction)
                    done[row["id"]] = row
                    f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
                if progress:
                    print(f"  {min((i + 1) * settings.batch_size, len(todo))}/{len(todo)}", flush=True)
    return [done[s.id] for s in samples]


def _ensure_newline_at_end(path: Path) -> None:
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
        if last != b"\n":
            with open(path, "a") as f:
                f.write("\n")


def read_ids(path: str | Path, key: str | None = None) -> list[str]:
    """Sample ids from a JSON list, a JSON object (``key`` picks the list), or one id per line."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            if key not in data:
                raise ValueError(f"{path}: field {key!r}: not found; keys are {sorted(data)}")
            data = data[key]
        return [str(i) for i in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def select(samples: Sequence, ids: Sequence[str]) -> list:
    """The samples with ``ids``, in the order of ``ids``; an unknown id is an error."""
    by_id = {s.id: s for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} ids not in the data, e.g. {missing[:5]}")
    return [by_id[i] for i in ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict labels for a split into a resumable JSONL file.")
    parser.add_argument("--model", required=True, help="model path or hub id (served model name for openai)")
    parser.add_argument("--data", required=True, type=Path, help="MORE-layout data directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ids-file", type=Path, help="restrict to these ids (JSON list/object or one per line)")
    parser.add_argument("--ids-key", help="key of the id list when --ids-file holds a JSON object")
    parser.add_argument("--backend", default="transformers", choices=BACKENDS)
    parser.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device")
    defaults = GenerationSettings()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)

    samples = load_split(args.data, args.split)
    if args.ids_file:
        samples = select(samples, read_ids(args.ids_file, args.ids_key))
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, batch_size=args.batch_size, seed=args.seed)
    backend = make_backend(args.model, args.backend, dtype=args.dtype, device=args.device,
                           base_url=args.base_url, api_key_env=args.api_key_env)
    rows = predict_to_file(backend, samples, args.out, settings)
    unparsable = sum(r["label"] is None for r in rows)
    correct = sum(r["label"] == r["gold"] for r in rows)
    print(f"{len(rows)} predictions in {args.out}: {correct} correct, {unparsable} unparsable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
