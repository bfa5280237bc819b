"""Batched generation for every stage: the two images + the student prompt -> text, label, token counts.

One function, ``generate(backend, samples, settings)``, with three backends:
- ``TransformersBackend``: in-process, batched, left-padded ``model.generate`` (the default);
- ``VLLMBackend``: vLLM's offline engine on GPU servers (imported lazily; not runnable here);
- ``OpenAIBackend``: any OpenAI-compatible server (e.g. ``vllm serve``) through the ``openai`` client.

Every backend decodes with the same :class:`GenerationSettings`, passed in full: temperature,
top-p, top-k, repetition penalty, token budget and seed. None of them falls back on the model's
own ``generation_config.json`` (Qwen's release sets its own sampling defaults there, which
``transformers`` and ``vllm serve`` would otherwise apply and vLLM's offline engine would not),
so a difficulty split or a Table 1 does not depend on the backend chosen. Greedy decoding
(temperature 0) is what evaluation uses; temperature > 0 samples. Labels are parsed with
``morelib.answer.parse_label``, the parser the rewards use; an unparsable output gets label None.

``predict_to_file`` writes a prediction JSONL (``RunLayout.predictions``) and resumes: ids
already in the file are skipped and each row is appended as it comes. With vLLM it runs the
engine in a child process (``python -m morelib.inference --settings FILE``, launched by
``morelib.launch`` with the settings and the request in one JSON file, as training is), one per
model, so the GPU memory of one model is given back before the next one loads.

    python -m morelib.inference predict --model PATH --data DATA_DIR --split test --out FILE
"""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

from morelib.answer import parse_label
from morelib.data import load_images, load_split
from morelib.files import JsonlStore, read_json
from morelib.prompts import student_prompt, task_description
from morelib.settings import BACKENDS, GenerationSettings  # the profile's "inference" section: one class for decoding

log = logging.getLogger(__name__)


def hf_generation_config(settings: GenerationSettings, eos_token_id: list[int], pad_token_id: int | None,
                         bos_token_id: int | None = None):
    """The full ``transformers.GenerationConfig`` for ``settings``.

    Greedy (temperature 0) leaves the sampling-only knobs at their neutral values, as vLLM does
    at temperature 0; the repetition penalty applies in both modes, as in vLLM.
    """
    from transformers import GenerationConfig

    sampling = settings.temperature > 0
    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=0,
        do_sample=sampling,
        num_beams=1,
        temperature=settings.temperature if sampling else 1.0,
        top_p=settings.top_p if sampling else 1.0,
        top_k=settings.top_k if sampling else None,  # 0 = no cut; unused when greedy
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=0,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
    )


def vllm_sampling_kwargs(settings: GenerationSettings) -> dict:
    """``vllm.SamplingParams`` keyword arguments for ``settings``: every decoding field, none left to defaults."""
    return {
        "n": 1,
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,  # 0 = no cut (vLLM's own convention too)
        "min_p": 0.0,
        "repetition_penalty": settings.repetition_penalty,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": settings.seed,
    }


def openai_request_kwargs(settings: GenerationSettings, min_pixels: int | None = None,
                          max_pixels: int | None = None) -> dict:
    """``chat.completions.create`` keyword arguments for ``settings``.

    Every field is sent, so ``vllm serve`` never fills one from the model's generation config.
    ``top_k``, ``repetition_penalty`` and the image limits (``mm_processor_kwargs``) are not
    OpenAI parameters: they travel in ``extra_body``, which vLLM's server reads as fields of its
    ``ChatCompletionRequest``.
    """
    extra = {"top_k": settings.top_k, "repetition_penalty": settings.repetition_penalty}
    pixels = {name: value for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
              if value is not None}
    if pixels:
        extra["mm_processor_kwargs"] = pixels
    return {
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "seed": settings.seed,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "extra_body": extra,
    }


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
    def from_path(cls, path: str | Path, dtype: str = "auto", device: str | None = None,
                  min_pixels: int | None = None, max_pixels: int | None = None, attn_implementation: str = "auto"):
        from morelib.model import default_device, load_model, resolve_attn_implementation

        device = device or default_device()
        attention = resolve_attn_implementation(attn_implementation, tag="inference",
                                                cuda=device.startswith("cuda"))
        model, processor = load_model(path, dtype=dtype, device=device, min_pixels=min_pixels, max_pixels=max_pixels,
                                      attn_implementation=attention)
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
        from transformers import GenerationConfig

        tokenizer = self.processor.tokenizer
        inputs = self.encode(samples, template).to(self.model.device)
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        eos_ids = _eos_ids(self.model, tokenizer)
        own = self.model.generation_config
        config = hf_generation_config(settings, eos_ids, tokenizer.pad_token_id, own.bos_token_id)
        # generate() fills every field our config leaves unset from model.generation_config; an
        # empty one in its place for the call means nothing comes from the checkpoint's defaults.
        self.model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
                                                        bos_token_id=own.bos_token_id)
        try:
            with torch.inference_mode():
                out = self.model.generate(**inputs, generation_config=config)
        finally:
            self.model.generation_config = own
        completions = out[:, inputs["input_ids"].shape[1]:]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, n_prompt in zip(completions.tolist(), prompt_lengths):
            n_completion = _completion_length(row, eos_ids)
            text = tokenizer.decode(row[:n_completion], skip_special_tokens=True)
            results.append(Generation(text=text, prompt_tokens=int(n_prompt), completion_tokens=n_completion))
        return results


def _eos_ids(model, tokenizer) -> list[int]:
    """The end tokens: part of the model's definition (where an answer stops), not a decoding choice."""
    eos = model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return ids or [tokenizer.eos_token_id]


def _completion_length(row: list[int], eos_ids: list[int]) -> int:
    """Tokens generated up to and including the first end token (the rest is padding)."""
    for i, token in enumerate(row):
        if token in eos_ids:
            return i + 1
    return len(row)


# Our prompts hold two images (the full image and the object crop) and never a video.
LIMIT_MM_PER_PROMPT = {"image": 2, "video": 0}


def vllm_engine_kwargs(model_path: str | Path, dtype: str = "auto", max_model_len: int | None = None,
                       min_pixels: int | None = None, max_pixels: int | None = None, seed: int = 0,
                       gpu_memory_utilization: float | None = None, **engine_kwargs) -> dict:
    """``vllm.LLM`` keyword arguments: two images and no video per prompt, the image pixel limits
    (``mm_processor_kwargs``, the same values the HF processor gets) and the context length."""
    kwargs = {"model": str(model_path), "dtype": dtype, "seed": seed, "limit_mm_per_prompt": dict(LIMIT_MM_PER_PROMPT)}
    pixels = {name: value for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
              if value is not None}
    if pixels:
        kwargs["mm_processor_kwargs"] = pixels
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    return {**kwargs, **engine_kwargs}


class VLLMBackend:
    """vLLM's offline engine in this process (GPU servers only; vLLM is imported when it is built).

    Use it through :func:`backend_for`, which runs it in a child process unless told otherwise.
    """

    def __init__(self, model_path: str | Path, **engine_options):
        from vllm import LLM

        from morelib.model import load_processor

        self.processor = load_processor(model_path)
        self.llm = LLM(**vllm_engine_kwargs(model_path, **engine_options))

    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(settings))
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
    ``vllm serve`` accept any key, so a missing variable falls back to ``"EMPTY"``). The client
    comes from ``morelib.openai_api`` and is built at the first :meth:`generate` from its
    settings (``request_timeout``, ``max_retries``, ``dead_endpoint_timeout``): the openai client
    retries 429, 5xx, timeouts, connection errors and replies without text itself, and an
    endpoint with no usable reply for ``dead_endpoint_timeout`` seconds fails every request at
    once. A batch with failed requests raises :class:`FailedRequests`, which carries the
    generations that succeeded, so that nothing paid for is lost and no empty reply is kept.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY"):
        self.base_url, self.model = base_url, model
        self._api_key = os.environ.get(api_key_env, "EMPTY")
        self.watch = None
        self.client = None

    def _client(self, settings: GenerationSettings):
        from morelib import openai_api

        if self.client is None:
            self.watch = openai_api.Watch(settings.dead_endpoint_timeout)
            self.client = openai_api.sync_client(self.base_url, self._api_key, timeout=settings.request_timeout,
                                                 max_retries=settings.max_retries, watch=self.watch)
        return self.client

    def messages(self, sample, template: str | None = None) -> list[dict]:
        images = [{"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in load_images(sample)]
        return [{"role": "user", "content": images + [{"type": "text", "text": task_description(sample, template)}]}]

    def _one(self, sample, settings: GenerationSettings, template: str | None) -> Generation:
        import openai

        from morelib import openai_api

        sampling = settings.temperature > 0
        extra = {"seed": settings.seed} if sampling else {}
        # Not in the OpenAI API (its server would refuse them), but vllm serve reads them from the
        # body: sent only when they change anything.
        body = {k: v for k, v, off in (("top_k", settings.top_k, 0), ("repetition_penalty", settings.repetition_penalty, 1.0))
                if v != off and (sampling or k == "repetition_penalty")}
        try:
            response = self._client(settings).chat.completions.create(
                model=self.model,
                messages=self.messages(sample, template),
                temperature=settings.temperature,
                top_p=settings.top_p if sampling else 1.0,
                max_tokens=settings.max_new_tokens,
                **({"extra_body": body} if body else {}),
                **extra,
            )
            text, usage = openai_api.completion_text(response)
        except (openai.OpenAIError, ValueError) as error:
            kind, message = openai_api.describe(error, self.base_url, self.model, secret=self._api_key)
            raise openai_api.EndpointError(kind, f"sample {sample.id}: {message}") from None
        return Generation(text=text, prompt_tokens=usage.get("prompt_tokens") or 0,
                          completion_tokens=usage.get("completion_tokens") or 0)

    def generate(self, samples: Sequence, settings: GenerationSettings, template: str | None = None) -> list[Generation]:
        from morelib import openai_api

        self._client(settings)
        with ThreadPoolExecutor(max_workers=max(1, min(len(samples), settings.batch_size))) as pool:
            futures = [pool.submit(self._one, s, settings, template) for s in samples]
        outputs: list[Generation | None] = []
        errors: list[openai_api.EndpointError] = []
        for future in futures:
            try:
                outputs.append(future.result())
            except openai_api.EndpointError as error:
                outputs.append(None)
                errors.append(error)
        if errors:
            first = next((e for e in errors if e.fatal), errors[0])
            raise FailedRequests(f"{len(errors)} of {len(samples)} requests failed ({first})", outputs)
        return outputs


class FailedRequests(RuntimeError):
    """Some requests of a batch failed for good; ``outputs`` holds the others' generations (None where failed)."""

    def __init__(self, message: str, outputs: list[Generation | None]):
        super().__init__(message)
        self.outputs = outputs


def image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")




@dataclass(frozen=True)
class SubprocessBackend:
    """A model whose predictions are made by ``python -m morelib.inference`` in a child process.

    vLLM keeps GPU memory until its process ends, so each evaluated model gets a process of its
    own: when :func:`predict_to_file` returns, the memory is free for the next model. Only
    :func:`predict_to_file` can use it (the child writes the prediction file; this process reads it).
    The child is launched as training is (``morelib.launch``): its settings and its request (model,
    samples, output file) travel in one JSON file, ``launch.write_settings``.
    """

    model: str
    backend: str = "vllm"
    dtype: str = "auto"
    device: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_model_len: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    gpu_memory_utilization: float | None = None

    def child_settings(self, settings: GenerationSettings) -> GenerationSettings:
        """``settings`` with this backend's engine options: what the child decodes with."""
        from morelib.config import build_settings

        values = asdict(settings)
        values.update(backend=self.backend, dtype=self.dtype, base_url=self.base_url, min_pixels=self.min_pixels,
                      max_pixels=self.max_pixels, vllm_max_model_len=self.max_model_len)
        if self.gpu_memory_utilization is not None:
            values["vllm_gpu_memory_utilization"] = self.gpu_memory_utilization
        return build_settings("inference", values)

    def write_request(self, path: str | Path, samples: Sequence, out_path: str | Path, settings: GenerationSettings,
                      template: str | None = None) -> Path:
        """The child's settings and request file (``morelib.launch.write_settings``); paths are absolute,
        because the child runs in the repository root."""
        from morelib.launch import write_settings

        places = {(str(s.data_dir), s.split) for s in samples}
        if len(places) != 1:
            raise ValueError(f"a child process predicts one split of one data directory; got {sorted(places)}")
        [(data_dir, split)] = places
        model = os.path.abspath(self.model) if Path(self.model).exists() else self.model  # else a hub id or served name
        request = {"model": model, "data": os.path.abspath(data_dir), "split": split,
                   "out": os.path.abspath(out_path), "ids": [s.id for s in samples], "device": self.device,
                   "api_key_env": self.api_key_env, "template": template}
        return write_settings(self.child_settings(settings), path, request=request)

    def predict_to_file(self, samples: Sequence, out_path: str | Path, settings: GenerationSettings,
                        template: str | None = None, tail_lines: int = 30) -> None:
        """Run the child on ``samples`` (one split of one data directory); it resumes ``out_path``."""
        from morelib.launch import LaunchError, launch, launch_command

        with tempfile.TemporaryDirectory(prefix="morelib-predict-") as tmp:
            request = self.write_request(Path(tmp, "request.json"), samples, out_path, settings, template)
            try:
                launch(CHILD_MODULE, request, distributed="none", echo=True, tail_lines=tail_lines)
            except LaunchError as failure:
                errors = [line for line in failure.tail if line.startswith("error: ")]
                raise RuntimeError(
                    f"{self.backend} inference of {self.model} failed in its child process (exit code "
                    f"{failure.returncode}): " + (errors[-1][len("error: "):] if errors else "\n".join(failure.tail))
                    + "\ncommand: " + " ".join(launch_command(CHILD_MODULE, request, distributed="none"))) from None


CHILD_MODULE = "morelib.inference"


def make_backend(
    model: str | Path,
    backend: str = "transformers",
    dtype: str = "auto",
    device: str | None = None,
    base_url: str | None = None,
    served_model_name: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    in_subprocess: bool | None = None,
    attn_implementation: str = "auto",
) -> Backend | SubprocessBackend:
    """A backend by name. For ``openai``, ``model`` is the served model's name unless given apart.

    ``vllm`` runs in a child process (:class:`SubprocessBackend`) unless ``in_subprocess=False``.
    Options that do not concern the chosen backend are ignored, so a profile's whole inference
    section can be passed: ``min_pixels``/``max_pixels`` go to the HF processor (transformers)
    and to vLLM's ``mm_processor_kwargs``; ``max_model_len`` and ``gpu_memory_utilization`` to vLLM;
    ``attn_implementation`` to the transformers model (``morelib.model.resolve_attn_implementation``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
    if in_subprocess is None:
        in_subprocess = backend == "vllm"
    pixels = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    engine = {"max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization}
    if in_subprocess:
        return SubprocessBackend(str(model), backend, dtype=dtype, device=device, base_url=base_url,
                                 api_key_env=api_key_env, **pixels, **(engine if backend == "vllm" else {}))
    if backend == "transformers":
        return TransformersBackend.from_path(model, dtype=dtype, device=device, attn_implementation=attn_implementation,
                                             **pixels)
    if backend == "vllm":
        return VLLMBackend(model, dtype=dtype, **pixels, **engine)
    if not base_url:
        raise ValueError("backend 'openai' needs base_url (e.g. http://localhost:8000/v1)")
    return OpenAIBackend(base_url, served_model_name or str(model), api_key_env=api_key_env)


def backend_for(settings: GenerationSettings, model: str | Path, *, backend: str | None = None,
                device: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                in_subprocess: bool | None = None) -> Backend | SubprocessBackend:
    """The backend that decodes ``model`` as the ``inference`` settings say (backend, dtype, server,
    served name, pixel limits, vLLM context and memory share, the transformers attention kernel; the
    openai backend reads its deadline, retries and dead-endpoint rule from the settings it decodes with).

    The one place that turns generation settings into a backend: notebooks 03 to 07, the
    evaluation, the benchmarks and the inference child call it. ``backend`` overrides
    ``settings.backend`` (``"transformers"``: one fact in this process, quicker than an engine).
    """
    return make_backend(model, backend or settings.backend, dtype=settings.dtype, device=device,
                        base_url=settings.base_url, served_model_name=settings.served_model_name,
                        api_key_env=api_key_env, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels,
                        max_model_len=settings.vllm_max_model_len,
                        gpu_memory_utilization=settings.vllm_gpu_memory_utilization, in_subprocess=in_subprocess,
                        attn_implementation=settings.attn_implementation)


def as_backend(model_or_backend) -> Backend:
    """Accept a backend, a ``(model, processor)`` pair, or a model path (transformers backend)."""
    if isinstance(model_or_backend, SubprocessBackend):
        raise TypeError(f"{model_or_backend.model}: runs in a child process; use predict_to_file, not generate")
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


def _predict_batch(backend: Backend, batch: Sequence, settings: GenerationSettings, template: str | None,
                   keep: Callable[[Prediction], None] | None = None) -> list[Prediction]:
    """The batch's predictions. When some requests fail, ``keep`` gets the others' first, then
    :class:`FailedRequests` is raised: a failed sample is never a prediction."""
    try:
        outputs, failure = backend.generate(batch, settings, template), None
    except FailedRequests as error:
        outputs, failure = error.outputs, error
    if len(outputs) != len(batch):
        raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(batch)} samples")
    predictions = [
        Prediction(id=s.id, gold=s.label, text=o.text, label=parse_label(o.text),
                   prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens)
        for s, o in zip(batch, outputs) if o is not None
    ]
    if failure is not None:
        for prediction in predictions if keep is not None else ():
            keep(prediction)
        raise failure
    return predictions


PREDICTION_FIELDS = ("id",)


def read_predictions(path: str | Path, required: Sequence[str] = PREDICTION_FIELDS) -> list[dict]:
    """Rows of a prediction file (``RunLayout.predictions``; ``[]`` when there is none yet), each
    with the ``required`` fields (``evaluation.load_predictions`` asks for what it scores).

    A torn last line (a run killed mid-write) is left out with a warning and cut at the next
    resume; any other broken line is an error naming the file and the line.
    """
    return JsonlStore(path, required=tuple(required)).rows()


def predict_to_file(model_or_backend, samples: Sequence, out_path: str | Path,
                    settings: GenerationSettings | None = None, template: str | None = None,
                    progress: bool = True) -> list[dict]:
    """Predict ``samples`` into the JSONL ``out_path``, skipping ids already there.

    Each row is appended as soon as its batch is done, so a killed run loses at most one batch.
    A :class:`SubprocessBackend` makes the predictions in its child process. Returns the rows
    for ``samples`` (in their order), old and new.
    """
    settings = settings or GenerationSettings()
    store = JsonlStore(out_path, required=PREDICTION_FIELDS)
    done = {row["id"]: row for row in store.rows()}
    todo = [s for s in samples if s.id not in done]
    if progress:
        print(f"{store.path}: {len(samples) - len(todo)} of {len(samples)} already predicted, {len(todo)} to go",
              flush=True)
    if todo and isinstance(model_or_backend, SubprocessBackend):
        model_or_backend.predict_to_file(todo, store.path, settings, template)
        done = {row["id"]: row for row in store.rows()}
        missing = [s.id for s in todo if s.id not in done]
        if missing:
            raise RuntimeError(f"{store.path}: the child process left {len(missing)} samples unpredicted, "
                               f"e.g. {missing[:3]}")
    elif todo:
        backend = as_backend(model_or_backend)
        n_batches = -(-len(todo) // settings.batch_size)
        report_every = max(1, n_batches // 4)  # about four progress lines, not one per batch

        def keep(prediction: Prediction) -> None:
            row = asdict(prediction)
            done[row["id"]] = row
            store.append(row)

        with store:
            for i, batch in enumerate(batches(todo, settings.batch_size)):
                try:
                    predictions = _predict_batch(backend, batch, settings, template, keep)
                except FailedRequests as error:
                    missing = sum(s.id not in done for s in todo)
                    raise FailedRequests(f"{store.path}: {error}; {len(done)} predictions are saved, {missing} "
                                         "are not: run again to predict them", error.outputs) from None
                for prediction in predictions:
                    keep(prediction)
                if progress and ((i + 1) % report_every == 0 or i + 1 == n_batches):
                    print(f"  {min((i + 1) * settings.batch_size, len(todo))}/{len(todo)}", flush=True)
    return [done[s.id] for s in samples]


def read_ids(path: str | Path, key: str | None = None) -> list[str]:
    """Sample ids from a JSON list, a JSON object (``key`` picks the list), or one id per line."""
    path = Path(path)
    if path.suffix != ".json":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    data = read_json(path)
    if isinstance(data, dict):
        if key not in data:
            raise ValueError(f"{path}: field {key!r}: not found; keys are {sorted(data)}")
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of sample ids, got {type(data).__name__}")
    return [str(i) for i in data]


def select(samples: Sequence, ids: Sequence[str]) -> list:
    """The samples with ``ids``, in the order of ``ids``; an unknown id is an error."""
    by_id = {s.id: s for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} ids not in the data, e.g. {missing[:5]}")
    return [by_id[i] for i in ids]


# ----------------------------------------------------------------------------- command line


@dataclass
class PredictArgs:
    """What to predict, where to write it, and with which backend."""

    model: str = field(metadata={"help": "model directory or hub id (openai backend: the served model name)"})
    data: str = field(metadata={"help": "MORE-layout data directory"})
    out: str = field(metadata={"help": "prediction JSONL to write; ids already in it are skipped (resume)"})
    split: str = field(default="test", metadata={"help": "split to predict: train, valid or test"})
    ids_file: str | None = field(default=None, metadata={
        "help": "predict only these ids: a JSON list, a JSON object (see ids_key) or one id per line"})
    ids_key: str | None = field(default=None, metadata={"help": "key of the id list when ids_file holds a JSON object"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "openai backend: environment variable holding the API key"})
    device: str | None = field(default=None, metadata={"help": "transformers backend: cpu, cuda, ... (default: cuda if present)"})
    template_file: str | None = field(default=None, metadata={
        "help": "task description template (default: the package's student template)"})


def predict_split(model: str, data: str | Path, split: str, out: str | Path, settings: GenerationSettings,
                  ids: Sequence[str] | None = None, device: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", template: str | None = None) -> list[dict]:
    """Predict ``split`` of ``data`` (or its ``ids``) into ``out`` in this process: what the command line
    and the child process of :class:`SubprocessBackend` run."""
    from morelib.model import check_model_path

    if settings.backend != "openai":
        check_model_path(model)  # a missing local directory is named as such, not as a bad hub id
    data_dir = Path(data).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data directory")
    samples = load_split(data_dir, split)
    if ids is not None:
        samples = select(samples, ids)
    backend = backend_for(settings, model, device=device, api_key_env=api_key_env, in_subprocess=False)
    rows = predict_to_file(backend, samples, out, settings, template)
    unparsable = sum(r["label"] is None for r in rows)
    correct = sum(r["label"] == r["gold"] for r in rows)
    print(f"{len(rows)} predictions in {out}: {correct} correct, {unparsable} unparsable")
    return rows


REQUEST_FIELDS = ("model", "data", "split", "out", "ids", "device", "api_key_env", "template")


def _predict_request(path: Path) -> int:
    """The child of :class:`SubprocessBackend`: settings and request from the file its parent wrote."""
    from morelib.files import FileFormatError
    from morelib.launch import read_request

    settings, request = read_request(path)
    for name in set(request) ^ set(REQUEST_FIELDS):
        raise FileFormatError(f"{path}: field 'request.{name}': {'unknown' if name in request else 'missing'}")
    predict_split(settings=settings, **request)
    return 0


def _predict_command(args) -> int:
    from morelib import cli

    options = cli.settings(args, PredictArgs)
    settings = cli.settings(args, GenerationSettings)
    ids = read_ids(options.ids_file, options.ids_key) if options.ids_file else None
    template = Path(options.template_file).read_text() if options.template_file else None
    predict_split(options.model, options.data, options.split, options.out, settings, ids=ids, device=options.device,
                  api_key_env=options.api_key_env, template=template)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m morelib.inference predict ...``: predict labels for a split into a resumable JSONL file.

    ``python -m morelib.inference --settings FILE`` is the child process of :class:`SubprocessBackend`.
    """
    from morelib import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--settings"]:
        from morelib.launch import settings_path_from_argv

        cli.hide_secrets_in_logs()
        try:
            return _predict_request(settings_path_from_argv(argv))
        except Exception as error:  # one line, which the parent shows
            return cli.fail(error)
    parser = cli.make_parser("python -m morelib.inference", "Batched inference into resumable prediction files.")
    commands = cli.add_commands(parser)
    cli.add_command(commands, "predict", "predict labels for a split (or some of its ids) into a JSONL file",
                    [PredictArgs, GenerationSettings])
    return cli.run(parser, argv, _predict_command)


if __name__ == "__main__":
    sys.exit(main())
