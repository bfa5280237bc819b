"""Stage 1 annotation: sample 25% per relation, ask an expert for six-step reasoning, keep every answer.

The pieces, in the order a run uses them:

1. ``stratified_split``: a seeded ``fraction`` of every relation goes to Stage 1; the rest is
   the Stage 2 pool (``annotation/split_ids.json``).
2. ``expert_prompt_text``: the paper's three-part expert prompt (task description, six
   stepwise instructions, the gold answer) from one replaceable template file.
3. ``estimate_cost`` and ``check_budget``: before any call, from token counts.
4. ``annotate``: the official ``openai`` client against any OpenAI-compatible endpoint, with
   our own retries (backoff, Retry-After, per-request timeout) and a progress bar.
5. ``ResponseStore``: an append-only JSONL store written and flushed per record, so a rerun
   skips finished work and a killed run loses only the requests in flight.
6. ``write_batch_files`` / ``ingest_batch_results``: the same requests through the Batch API.

    python -m morelib.annotate run --data-dir runs/toy/data --run-dir runs/toy --base-url URL
    python -m morelib.annotate estimate --data-dir DATA --model gpt-4o
    python -m morelib.annotate batch-write --data-dir DATA --run-dir RUN
    python -m morelib.annotate batch-ingest --data-dir DATA --run-dir RUN --results FILE.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import fcntl
import io
import json
import logging
import os
import random
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from morelib import cost
from morelib.config import resolve_path as resolve  # relative = the repository root
from morelib.labels import NONE, RELATIONS, relation_types
from morelib.prompts import TEMPLATES, task_description, text_hash

log = logging.getLogger(__name__)

EXPERT_TEMPLATE_PATH = TEMPLATES / "expert_prompt.txt"
# Sent with each online request so the offline expert can find the sample's toy facts; the
# real API ignores unknown headers and the student never sees it.
SAMPLE_ID_HEADER = "X-Morelib-Sample-Id"
TEMPLATE_FIELDS = ("task_description", "text", "entity", "labels", "gold_statement", "gold_label",
                   "object_type", "entity_type")


@dataclass
class AnnotationConfig:
    """Everything a Stage 1 annotation run needs; the CLI flags have the same names."""

    data_dir: str = "runs/toy/data"  # the MORE layout (txt/, img_org/, ...); relative = repo root
    run_dir: str = "runs/toy"  # writes annotation/split_ids.json and annotation/responses.jsonl
    split: str = "train"
    fraction: float = 0.25  # share of every relation sent to the expert (paper: 25%)
    seed: int = 0
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    template_path: str | None = None  # expert prompt template; None = morelib/templates/expert_prompt.txt
    image_detail: str = "high"  # "low" | "high" | "auto": image_url detail, also used by the estimate
    concurrency: int = 8  # requests in flight
    request_timeout: float = 120.0  # seconds per attempt
    max_retries: int = 8  # retries per request on 429, 5xx, timeouts, connection errors, malformed replies
    backoff_base: float = 1.0  # seconds; attempt n waits about base * 2**n (with jitter)
    backoff_max: float = 60.0  # cap of one backoff wait (a longer Retry-After is still honoured)
    max_tokens: int = 1024  # completion cap per request
    temperature: float | None = None  # None = the endpoint's default
    expected_output_tokens: int = 500  # completion length assumed by the cost estimate
    price_input_per_m: float = 2.50  # USD per 1M input tokens (GPT-4o)
    price_output_per_m: float = 10.00  # USD per 1M output tokens (GPT-4o)
    batch_discount: float = 0.5  # Batch API price factor
    cost_threshold: float = 5.0  # USD; an estimate above this needs confirm_cost=True
    confirm_cost: bool = False
    limit: int | None = None  # send only the first N pending requests (smoke tests)
    progress: bool = True  # show a tqdm progress bar

    @property
    def prices(self) -> cost.Prices:
        return cost.Prices(self.price_input_per_m, self.price_output_per_m, self.batch_discount)


class CostConfirmationRequired(RuntimeError):
    """The estimated cost is above ``cost_threshold`` and ``confirm_cost`` is not set."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- sampling


def stratified_split(samples, fraction: float = 0.25, seed: int = 0) -> tuple[list[str], list[str]]:
    """(stage1 ids, stage2 pool ids): ``round(fraction * n)`` of every relation, at least one.

    Each relation draws from its own generator seeded by (seed, relation), so the choice for
    one relation does not depend on the others. Both lists keep the data's order.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    by_label: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        by_label[s.label].append(s.id)
    chosen: set[str] = set()
    for label, ids in by_label.items():
        k = max(1, int(fraction * len(ids) + 0.5))
        chosen.update(random.Random(f"{seed}:{label}").sample(ids, k))
    order = [s.id for s in samples]
    return [i for i in order if i in chosen], [i for i in order if i not in chosen]


def split_ids_path(run_dir: str | Path) -> Path:
    return resolve(run_dir) / "annotation" / "split_ids.json"


def write_split_ids(run_dir: str | Path, stage1: list[str], pool: list[str]) -> Path:
    path = split_ids_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage1": stage1, "stage2_pool": pool}) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def read_split_ids(run_dir: str | Path) -> dict[str, list[str]]:
    path = split_ids_path(run_dir)
    data = json.loads(path.read_text())
    for key in ("stage1", "stage2_pool"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: field {key!r} must be a list of sample ids")
    return data


# ----------------------------------------------------------------------------- the expert prompt


def read_expert_template(template_path: str | Path | None = None) -> str:
    return resolve(template_path).read_text() if template_path else EXPERT_TEMPLATE_PATH.read_text()


def gold_statement(sample) -> str:
    """The paper's "actual answer" part: gold types and relation, or that there is none."""
    if sample.label == NONE:
        return (f'For your reference, the correct answer: there is no relation between the object '
                f'and the entity "{sample.entity}", so the relation is none.')
    obj_type, ent_type = relation_types(sample.label)
    return (f'For your reference, the correct answer: the object is of type {obj_type}, the entity '
            f'"{sample.entity}" is of type {ent_type}, and their relation is {sample.label}.')


def expert_prompt_text(sample, template: str | None = None, template_name: str = "expert template",
                       relations: tuple[str, ...] = RELATIONS) -> str:
    """The expert's text prompt for one sample; placeholders are the names in ``TEMPLATE_FIELDS``."""
    template = template if template is not None else EXPERT_TEMPLATE_PATH.read_text()
    types = relation_types(sample.label) if sample.label != NONE else None
    values = {
        "task_description": task_description(sample, relations=relations),
        "text": sample.text,
        "entity": sample.entity,
        "labels": ", ".join(relations),
        "gold_statement": gold_statement(sample),
        "gold_label": sample.label,
        "object_type": types[0] if types else "",
        "entity_type": types[1] if types else "",
    }
    try:
        return template.format(**values).strip()
    except KeyError as exc:
        raise ValueError(f"{template_name}: unknown placeholder {exc}; available: {', '.join(TEMPLATE_FIELDS)} "
                         "(write literal braces as {{ }})") from None


def prompt_hash(prompt_text: str, sample, detail: str) -> str:
    """Identifies one request's content: text, image identity (file, box) and detail level."""
    return text_hash(json.dumps([prompt_text, sample.img_id, list(sample.box), detail]))


def image_data_url(image, quality: int = 90) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def expert_messages(prompt_text: str, images, detail: str) -> list[dict]:
    """One user turn: the full image, the object crop, then the text (the student's order)."""
    parts = [{"type": "image_url", "image_url": {"url": image_data_url(im), "detail": detail}} for im in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": prompt_text}]}]


@dataclass
class ExpertRequest:
    sample: object
    prompt_text: str
    prompt_hash: str

    @property
    def sample_id(self) -> str:
        return self.sample.id


def plan_requests(samples, cfg: AnnotationConfig) -> list[ExpertRequest]:
    template = read_expert_template(cfg.template_path)
    name = str(cfg.template_path or EXPERT_TEMPLATE_PATH)
    requests = []
    for s in samples:
        text = expert_prompt_text(s, template, name)
        requests.append(ExpertRequest(s, text, prompt_hash(text, s, cfg.image_detail)))
    return requests


def request_body(req: ExpertRequest, cfg: AnnotationConfig, load_images) -> dict:
    body = {"model": cfg.model, "messages": expert_messages(req.prompt_text, load_images(req.sample), cfg.image_detail),
            "max_tokens": cfg.max_tokens}
    if cfg.temperature is not None:
        body["temperature"] = cfg.temperature
    return body


# ----------------------------------------------------------------------------- cost


def image_sizes(sample) -> list[tuple[int, int]]:
    """(full, crop) sizes in pixels without decoding the image: the header and the box suffice."""
    from PIL import Image

    with Image.open(sample.image_path) as im:
        width, height = im.size
    _, _, w, h = sample.box
    return [(width, height), (max(1, round(w * width)), max(1, round(h * height)))]


def estimate_cost(requests: list[ExpertRequest], cfg: AnnotationConfig) -> cost.CostEstimate:
    tokens = [cost.request_tokens(r.prompt_text, image_sizes(r.sample), cfg.image_detail) for r in requests]
    return cost.estimate(tokens, cfg.expected_output_tokens, cfg.prices)


def check_budget(estimate: cost.CostEstimate, cfg: AnnotationConfig, batch: bool = False) -> None:
    usd = estimate.batch_usd if batch else estimate.usd
    if usd > cfg.cost_threshold and not cfg.confirm_cost:
        raise CostConfirmationRequired(
            f"estimated cost ${usd:,.2f} is above cost_threshold ${cfg.cost_threshold:,.2f}: "
            f"{estimate.summary()}. Set confirm_cost=True (--confirm-cost) to spend it.")


# ----------------------------------------------------------------------------- the store


class ResponseStore:
    """Append-only JSONL of expert records; one line is written and flushed per record.

    A record: ``sample_id, prompt_hash, model, response, usage, started_at, finished_at,
    error`` (+ ``attempts``, ``mode``). A kill during a write can leave a torn last line:
    reading ignores it and opening for append cuts it off, so it never corrupts the next record.
    """

    REQUIRED = ("sample_id", "prompt_hash", "model")

    def __init__(self, path: str | Path):
        self.path = resolve(path)
        self._fd: int | None = None

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        torn = lines.pop()  # the bytes after the last newline: empty unless a write was cut short
        if torn:
            log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted write", self.path, len(torn))
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{self.path}:{number}: corrupt record ({exc})") from None
            missing = [k for k in self.REQUIRED if k not in record]
            if missing:
                raise ValueError(f"{self.path}:{number}: record lacks field {missing[0]!r}")
            out.append(record)
        return out

    def completed(self, model: str) -> dict[tuple[str, str], dict]:
        """Successful records of ``model`` by (sample_id, prompt_hash); the latest wins."""
        return {(r["sample_id"], r["prompt_hash"]): r for r in self.records()
                if r["model"] == model and r.get("response") is not None and not r.get("error")}

    def open(self) -> "ResponseStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # One writer at a time; the lock dies with the process, even on SIGKILL.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{self.path}: another annotation run is writing to this store") from None
        self._repair(fd)
        self._fd = fd
        return self

    def _repair(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        tail_start = max(0, size - (1 << 20))
        tail = os.pread(fd, size - tail_start, tail_start)
        cut = tail_start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        log.warning("%s: cutting a torn last line (%d bytes)", self.path, size - cut)
        os.ftruncate(fd, cut)

    def append(self, record: dict) -> None:
        if self._fd is None:
            raise RuntimeError("open the store before appending")
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ResponseStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def store_path(run_dir: str | Path) -> Path:
    return resolve(run_dir) / "annotation" / "responses.jsonl"


# ----------------------------------------------------------------------------- the client


RETRY_KINDS = ("rate_limit", "server_error", "timeout", "connection", "malformed")


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


def _retry_after(headers) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``retry-after`` in seconds or as a date."""
    if headers is None:
        return None
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _classify(exc: BaseException) -> _Retryable | None:
    """A retryable failure, or None when retrying cannot help."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return _Retryable("timeout", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return _Retryable("connection", str(exc))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return _Retryable("rate_limit", str(exc), _retry_after(exc.response.headers))
        if status >= 500 or status in (408, 409):
            return _Retryable("server_error", str(exc), _retry_after(exc.response.headers))
        return None
    if isinstance(exc, (ValueError, openai.APIResponseValidationError)):  # a body that is not valid JSON
        return _Retryable("malformed", f"{type(exc).__name__}: {exc}")
    return None


def _extract(completion) -> tuple[str | None, dict]:
    """(text, usage) of a chat completion; a reply without choices counts as malformed."""
    choices = getattr(completion, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise _Retryable("malformed", f"reply without choices: {str(completion)[:200]}")
    usage = getattr(completion, "usage", None)
    usage = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens", "total_tokens")} if usage else {}
    return choices[0].message.content, usage


def _fatal(exc: BaseException) -> bool:
    """Failures that would repeat for every request (bad key, unknown model or URL): stop the run."""
    import openai

    return isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError))


@dataclass
class AnnotationReport:
    """What one ``annotate`` call did."""

    planned: int = 0  # Stage 1 requests in total
    skipped: int = 0  # already in the store for this prompt hash and model
    sent: int = 0  # requests run now (each ends with exactly one record)
    succeeded: int = 0
    failed: int = 0  # ended with an error record (retried on the next run)
    retries: Counter = field(default_factory=Counter)  # by kind: rate_limit, server_error, timeout, ...
    estimate: cost.CostEstimate | None = None
    actual: dict = field(default_factory=dict)  # cost.tally of this call's records
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"planned {self.planned}, skipped {self.skipped}, sent {self.sent}: {self.succeeded} ok, "
                f"{self.failed} failed; retries {dict(self.retries)}; "
                f"actual ${self.actual.get('usd', 0.0):,.4f} in {self.seconds:.1f}s")


def _backoff(cfg: AnnotationConfig, attempt: int, retry_after: float | None) -> float:
    wait = min(cfg.backoff_max, cfg.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0)
    # Retry-After is the server's floor; never retry sooner than it asks.
    return max(wait, retry_after) if retry_after is not None else wait


async def _one(client, req: ExpertRequest, cfg: AnnotationConfig, load_images, report: AnnotationReport) -> dict:
    started = utc_now()
    body = await asyncio.to_thread(request_body, req, cfg, load_images)
    record = {"sample_id": req.sample_id, "prompt_hash": req.prompt_hash, "model": cfg.model,
              "response": None, "usage": {}, "started_at": started, "finished_at": None,
              "error": None, "attempts": 0, "mode": "online"}
    for attempt in range(cfg.max_retries + 1):
        record["attempts"] = attempt + 1
        try:
            completion = await client.chat.completions.create(
                **body, timeout=cfg.request_timeout, extra_headers={SAMPLE_ID_HEADER: req.sample_id})
            record["response"], record["usage"] = _extract(completion)
            if record["response"] is None:
                record["error"] = "empty reply: the message has no text content"
            break
        except Exception as exc:  # noqa: BLE001 - every failure either retries or becomes the record's error
            if _fatal(exc):
                raise
            retry = exc if isinstance(exc, _Retryable) else _classify(exc)
            if retry is None:
                record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                break
            report.retries[retry.kind] += 1
            if attempt == cfg.max_retries:
                record["error"] = f"gave up after {attempt + 1} attempts; last: {retry.kind}: {retry}"[:2000]
                break
            await asyncio.sleep(_backoff(cfg, attempt, retry.retry_after))
    record["finished_at"] = utc_now()
    return record


async def _run(requests: list[ExpertRequest], cfg: AnnotationConfig, store: ResponseStore, load_images,
               report: AnnotationReport, api_key: str) -> list[dict]:
    import openai
    from tqdm import tqdm

    # max_retries=0: the client's own retries would hide failures from ours and double the waits.
    client = openai.AsyncOpenAI(api_key=api_key, base_url=cfg.base_url, max_retries=0,
                                timeout=cfg.request_timeout)
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    done: list[dict] = []
    bar = tqdm(total=len(requests), unit="req", desc="expert", disable=not cfg.progress, file=sys.stderr)
    running_usd, failed = 0.0, 0

    async def worker():
        nonlocal running_usd, failed
        while not queue.empty():
            req = queue.get_nowait()
            record = await _one(client, req, cfg, load_images, report)
            store.append(record)  # written and flushed before the next await: a kill loses nothing done
            done.append(record)
            running_usd += cost.tally([record], cfg.prices)["usd"]
            failed += bool(record["error"])
            bar.update(1)
            bar.set_postfix(cost=f"${running_usd:.4f}", failed=failed)

    try:
        workers = [asyncio.create_task(worker()) for _ in range(max(1, cfg.concurrency))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
    finally:
        bar.close()
        await client.close()
    return done


def run_coroutine(coro):
    """Run ``coro`` to completion, also from inside Jupyter, whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def api_key_from_env(cfg: AnnotationConfig) -> str:
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise RuntimeError(f"set the environment variable {cfg.api_key_env} to the API key of {cfg.base_url}")
    return key


def load_train(cfg: AnnotationConfig):
    from morelib.data import load_split

    return load_split(resolve(cfg.data_dir), cfg.split)


def prepare(cfg: AnnotationConfig, samples=None) -> list[ExpertRequest]:
    """Sample Stage 1, write the split ids, and build its expert requests (no call is made)."""
    samples = load_train(cfg) if samples is None else samples
    stage1, pool = stratified_split(samples, cfg.fraction, cfg.seed)
    write_split_ids(cfg.run_dir, stage1, pool)
    chosen = set(stage1)
    return plan_requests([s for s in samples if s.id in chosen], cfg)


def pending(requests: list[ExpertRequest], store: ResponseStore, model: str) -> list[ExpertRequest]:
    done = store.completed(model)
    return [r for r in requests if (r.sample_id, r.prompt_hash) not in done]


def annotate(cfg: AnnotationConfig, samples=None, load_images=None) -> AnnotationReport:
    """Annotate the Stage 1 sample; resumable: only requests without a successful record are sent.

    Raises ``CostConfirmationRequired`` before any call when the estimate of the pending
    requests exceeds ``cfg.cost_threshold`` and ``cfg.confirm_cost`` is not set.
    """
    if load_images is None:
        from morelib.data import load_images
    t0 = time.perf_counter()
    requests = prepare(cfg, samples)
    store = ResponseStore(store_path(cfg.run_dir))
    todo = pending(requests, store, cfg.model)
    report = AnnotationReport(planned=len(requests), skipped=len(requests) - len(todo))
    if cfg.limit is not None:
        todo = todo[: cfg.limit]
    report.estimate = estimate_cost(todo, cfg)
    log.info("cost estimate: %s", report.estimate.summary())
    check_budget(report.estimate, cfg)
    if todo:
        api_key = api_key_from_env(cfg)
        with store:
            records = run_coroutine(_run(todo, cfg, store, load_images, report, api_key))
        report.sent = len(records)
        report.succeeded = sum(1 for r in records if not r["error"])
        report.failed = report.sent - report.succeeded
        report.actual = cost.tally(records, cfg.prices)
    report.seconds = time.perf_counter() - t0
    return report


def save_report(run_dir: str | Path, report: AnnotationReport, cfg: AnnotationConfig) -> Path:
    """``annotation/report.json``: what the last run did and cost (settings included, no key)."""
    path = resolve(run_dir) / "annotation" / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(report)
    data["retries"] = dict(report.retries)
    data["config"] = {k: v for k, v in dataclasses.asdict(cfg).items()}
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def latest_records(store: ResponseStore, ids, model: str | None = None) -> dict[str, dict]:
    """For each id, its latest successful record, else its latest record of any kind.

    The latest is the one written last, so a rerun after a template change supersedes the old
    answers. ``model`` restricts the choice to one model's records.
    """
    wanted = set(ids)
    best: dict[str, dict] = {}
    for r in store.records():
        sid = r["sample_id"]
        if sid not in wanted or (model is not None and r["model"] != model):
            continue
        ok = r.get("response") is not None and not r.get("error")
        prev = best.get(sid)
        prev_ok = prev is not None and prev.get("response") is not None and not prev.get("error")
        if ok or not prev_ok:
            best[sid] = r
    return best


# ----------------------------------------------------------------------------- Batch API


BATCH_MAX_BYTES = 190_000_000  # the Batch API accepts input files up to 200 MB
BATCH_MAX_REQUESTS = 50_000
CUSTOM_ID_SEP = "::"


def write_batch_files(cfg: AnnotationConfig, out_dir: str | Path | None = None, samples=None, load_images=None,
                      max_bytes: int = BATCH_MAX_BYTES) -> list[Path]:
    """Write the pending requests as Batch API input files (``batch_input_NNN.jsonl``).

    Each line is ``{"custom_id": "<sample id>::<prompt hash>", "method": "POST", "url":
    "/v1/chat/completions", "body": ...}``; files are split to stay under the API's size limit.
    Upload them with ``purpose="batch"`` and create a batch with a 24 h window; then pass
    the downloaded output file to :func:`ingest_batch_results`.
    """
    if load_images is None:
        from morelib.data import load_images
    requests = prepare(cfg, samples)
    todo = pending(requests, ResponseStore(store_path(cfg.run_dir)), cfg.model)
    if cfg.limit is not None:
        todo = todo[: cfg.limit]
    check_budget(estimate_cost(todo, cfg), cfg, batch=True)
    out_dir = resolve(out_dir) if out_dir else resolve(cfg.run_dir) / "annotation" / "batch"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("batch_input_*.jsonl"):
        old.unlink()
    paths: list[Path] = []
    f, size, count = None, 0, 0
    for req in todo:
        line = json.dumps({"custom_id": f"{req.sample_id}{CUSTOM_ID_SEP}{req.prompt_hash}", "method": "POST",
                           "url": "/v1/chat/completions", "body": request_body(req, cfg, load_images)}) + "\n"
        data = line.encode("utf-8")
        if f is None or size + len(data) > max_bytes or count >= BATCH_MAX_REQUESTS:
            if f is not None:
                f.close()
            paths.append(out_dir / f"batch_input_{len(paths):03d}.jsonl")
            f, size, count = open(paths[-1], "wb"), 0, 0
        f.write(data)
        size, count = size + len(data), count + 1
    if f is not None:
        f.close()
    return paths


def ingest_batch_results(cfg: AnnotationConfig, results_path: str | Path) -> dict:
    """Append a Batch API output (or error) file's lines to the store as records with ``mode="batch"``.

    Lines whose (sample, prompt hash) already has a successful record are skipped, so ingesting
    the same file twice adds nothing.
    """
    results_path = resolve(results_path)
    counts = Counter()
    store = ResponseStore(store_path(cfg.run_dir))
    done = store.completed(cfg.model)
    now = utc_now()
    with store, open(results_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                sample_id, _, phash = row["custom_id"].partition(CUSTOM_ID_SEP)
            except (ValueError, KeyError, AttributeError) as exc:
                raise ValueError(f"{results_path}:{number}: not a Batch API result line ({exc!r})") from None
            if (sample_id, phash) in done:
                counts["skipped"] += 1
                continue
            record = {"sample_id": sample_id, "prompt_hash": phash, "model": cfg.model, "response": None,
                      "usage": {}, "started_at": None, "finished_at": now, "error": None, "attempts": 1,
                      "mode": "batch", "batch_request_id": (row.get("response") or {}).get("request_id")}
            response = row.get("response") or {}
            body = response.get("body") or {}
            if row.get("error") or response.get("status_code") != 200:
                record["error"] = json.dumps(row.get("error") or body.get("error") or
                                             {"status_code": response.get("status_code")})[:2000]
            else:
                try:
                    record["response"] = body["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    record["error"] = "batch result without choices"
                usage = body.get("usage") or {}
                record["usage"] = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                record["model_reported"] = body.get("model")
            store.append(record)
            counts["error" if record["error"] else "ok"] += 1
    return dict(counts)


# ----------------------------------------------------------------------------- CLI


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``AnnotationConfig`` field (``data_dir`` -> ``--data-dir``)."""
    comments = _field_comments()
    for f in dataclasses.fields(AnnotationConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = comments.get(f.name, "") + f" (default: {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
        parser.add_argument(flag, type=kind, default=f.default, help=help_text)


def _field_comments() -> dict[str, str]:
    """The ``# comment`` after each config field, used as its --help text."""
    import inspect

    out = {}
    for line in inspect.getsource(AnnotationConfig).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest and name.isidentifier():
            out[name] = rest.split("#", 1)[1].strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morelib.annotate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "annotate the Stage 1 sample (resumable)"),
                            ("estimate", "print the cost estimate; no call is made"),
                            ("batch-write", "write Batch API input files"),
                            ("batch-ingest", "add a Batch API output file to the store")):
        p = sub.add_parser(name, help=help_text)
        _add_config_flags(p)
        if name == "batch-write":
            p.add_argument("--out-dir", default=None, help="default: RUN_DIR/annotation/batch")
        if name == "batch-ingest":
            p.add_argument("--results", required=True, help="the Batch API output JSONL")
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    extra = {k: args.pop(k) for k in ("out_dir", "results") if k in args}
    cfg = AnnotationConfig(**args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "estimate":
            requests = prepare(cfg)
            todo = pending(requests, ResponseStore(store_path(cfg.run_dir)), cfg.model)
            print(f"Stage 1: {len(requests)} requests, {len(todo)} pending")
            print(estimate_cost(todo, cfg).summary())
        elif command == "run":
            print(annotate(cfg).summary())
        elif command == "batch-write":
            for path in write_batch_files(cfg, extra["out_dir"]):
                print(path)
        else:
            print(ingest_batch_results(cfg, extra["results"]))
    except CostConfirmationRequired as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
