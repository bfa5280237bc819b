"""Stage 1 annotation: sample 25% per relation, ask an expert for six-step reasoning, keep every answer.

The pieces, in the order a run uses them:

1. ``stratified_split``: a seeded ``fraction`` of every relation goes to Stage 1; the rest is
   the Stage 2 pool (``annotation/split_ids.json``).
2. ``expert_prompt_text``: the paper's three-part expert prompt (task description, six
   stepwise instructions, the gold answer) from one replaceable template file.
3. ``estimate_cost`` and ``check_budget``: before any call, from token counts.
4. ``annotate``: the official ``openai`` client (through ``morelib.openai_api``, which leaves
   retries, backoff and Retry-After to it) against any OpenAI-compatible endpoint.
5. ``ResponseStore``: the append-only expert store (``annotation/responses.jsonl``), one line
   written per finished request, so a rerun skips finished work and a killed run loses only
   the requests in flight.
6. ``write_batch_files`` / ``ingest_batch_results``: the same requests through the Batch API.

A request that fails after the client's retries ends as one error record (its ``error_kind``
says why) and is sent again by the next run. Failures that would repeat for every request stop
the run at once, with one line naming the URL and the model: a rejected key (401, 403), an
unknown model or URL (404), and an endpoint that cannot be reached for ``dead_endpoint_timeout``
seconds. Requests not yet answered stay pending.

    python -m morelib.annotate run --profile toy
    python -m morelib.annotate run --data-dir DATA --run-dir RUN --base-url URL --model gpt-4o
    python -m morelib.annotate estimate --data-dir DATA --model gpt-4o
    python -m morelib.annotate batch-write --data-dir DATA --run-dir RUN
    python -m morelib.annotate batch-ingest --data-dir DATA --run-dir RUN --results FILE.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
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

import openai

from morelib import cost, openai_api
from morelib.files import FileFormatError, JsonlStore, read_json, read_jsonl, write_json
from morelib.labels import NONE, RELATIONS, relation_types
from morelib.layout import RunLayout, resolve_path
from morelib.prompts import TEMPLATES, task_description, text_hash
from morelib.settings import AnnotationSettings

log = logging.getLogger(__name__)

SECTION = "01_annotation"  # the profile section of these settings
EXPERT_TEMPLATE_PATH = TEMPLATES / "expert_prompt.txt"
# Sent with each online request so the offline expert can find the sample's toy facts; the
# real API ignores unknown headers and the student never sees it.
SAMPLE_ID_HEADER = "X-Morelib-Sample-Id"
TEMPLATE_FIELDS = ("task_description", "text", "entity", "labels", "gold_statement", "gold_label",
                   "object_type", "entity_type")


class AnnotationError(RuntimeError):
    """The run cannot go on (the message is one line): a rejected key or model, a dead endpoint, no data."""


class CostConfirmationRequired(AnnotationError):
    """The estimated cost is above ``cost_threshold`` and ``confirm_cost`` is not set."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- sampling


def stratified_split(samples, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(stage1 ids, stage2 pool ids): ``round(fraction * n)`` of every relation, at least one.

    ``round`` is Python's, half to even (2.5 -> 2), the one rounding rule of the package: the
    Stage 2 mix rounds the same way (``morelib.mixing``). The paper states none (inferred).

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
        k = max(1, round(fraction * len(ids)))
        chosen.update(random.Random(f"{seed}:{label}").sample(ids, k))
    order = [s.id for s in samples]
    return [i for i in order if i in chosen], [i for i in order if i not in chosen]


def write_split_ids(run_dir: str | Path, stage1: list[str], pool: list[str]) -> Path:
    """``annotation/split_ids.json``: ``{"stage1": [...], "stage2_pool": [...]}`` (written atomically)."""
    return write_json(RunLayout(run_dir).split_ids, {"stage1": stage1, "stage2_pool": pool}, indent=None)


def read_split_ids(run_dir: str | Path) -> dict[str, list[str]]:
    path = RunLayout(run_dir).split_ids
    data = read_json(path)
    for key in ("stage1", "stage2_pool"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise FileFormatError(f"{path}: field {key!r}: must be a list of sample ids")
    return data


# ----------------------------------------------------------------------------- the expert prompt


def read_expert_template(template_path: str | Path | None = None) -> str:
    return resolve_path(template_path).read_text() if template_path else EXPERT_TEMPLATE_PATH.read_text()


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


def plan_requests(samples, cfg: AnnotationSettings) -> list[ExpertRequest]:
    template = read_expert_template(cfg.template_path)
    name = str(cfg.template_path or EXPERT_TEMPLATE_PATH)
    requests = []
    for s in samples:
        text = expert_prompt_text(s, template, name)
        requests.append(ExpertRequest(s, text, prompt_hash(text, s, cfg.image_detail)))
    return requests


def request_body(req: ExpertRequest, cfg: AnnotationSettings, load_images) -> dict:
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


def estimate_cost(requests: list[ExpertRequest], cfg: AnnotationSettings) -> cost.CostEstimate:
    tokens = [cost.request_tokens(r.prompt_text, image_sizes(r.sample), cfg.image_detail) for r in requests]
    return cost.estimate(tokens, cfg.expected_output_tokens, cost.Prices.from_settings(cfg))


def check_budget(estimate: cost.CostEstimate, cfg: AnnotationSettings, batch: bool = False) -> None:
    usd = estimate.batch_usd if batch else estimate.usd
    if usd > cfg.cost_threshold and not cfg.confirm_cost:
        raise CostConfirmationRequired(
            f"estimated cost ${usd:,.2f} is above cost_threshold ${cfg.cost_threshold:,.2f}: "
            f"{estimate.summary()}. Set confirm_cost=True (--confirm-cost) to spend it.")


# ----------------------------------------------------------------------------- the store


class ResponseStore(JsonlStore):
    """The expert store: one JSONL record per finished request, appended and never rewritten.

    A record: ``sample_id, prompt_hash, model, response, usage, started_at, finished_at, error,
    error_kind, attempts, mode``. ``morelib.files.JsonlStore`` makes it safe to kill: one writer
    at a time, and a torn last line is ignored on reading and cut before the next append.
    """

    REQUIRED = ("sample_id", "prompt_hash", "model")

    def __init__(self, path: str | Path):
        super().__init__(resolve_path(path), self.REQUIRED)

    @classmethod
    def for_run(cls, run_dir: str | Path) -> "ResponseStore":
        return cls(RunLayout(run_dir).expert_store)

    def records(self) -> list[dict]:
        return self.rows()

    def completed(self, model: str) -> dict[tuple[str, str], dict]:
        """Successful records of ``model`` by (sample_id, prompt_hash); the latest wins."""
        return {(r["sample_id"], r["prompt_hash"]): r for r in self.records()
                if r["model"] == model and r.get("response") is not None and not r.get("error")}


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


# ----------------------------------------------------------------------------- online requests


@dataclass
class AnnotationReport:
    """What one ``annotate`` call did."""

    planned: int = 0  # Stage 1 requests in total
    skipped: int = 0  # already in the store for this prompt hash and model
    sent: int = 0  # requests run now (each ends with exactly one record)
    succeeded: int = 0
    failed: int = 0  # ended with an error record (sent again by the next run)
    errors: Counter = field(default_factory=Counter)  # failed requests by error kind
    attempts: Counter = field(default_factory=Counter)  # every HTTP attempt (retries included) by outcome
    estimate: cost.CostEstimate | None = None
    actual: dict = field(default_factory=dict)  # cost.tally of this call's records
    seconds: float = 0.0

    def summary(self) -> str:
        errors = f" ({', '.join(f'{k}: {n}' for k, n in sorted(self.errors.items()))})" if self.errors else ""
        return (f"planned {self.planned}, skipped {self.skipped}, sent {self.sent}: {self.succeeded} ok, "
                f"{self.failed} failed{errors}; HTTP attempts {dict(self.attempts)}; "
                f"actual ${self.actual.get('usd', 0.0):,.4f} in {self.seconds:.1f}s")


async def _one(client, req: ExpertRequest, cfg: AnnotationSettings, load_images, watch: openai_api.Watch,
               api_key: str) -> dict:
    """One request, retried by the client; ends in one record, or raises ``AnnotationError``."""
    started = utc_now()
    body = await asyncio.to_thread(request_body, req, cfg, load_images)
    record = {"sample_id": req.sample_id, "prompt_hash": req.prompt_hash, "model": cfg.model,
              "response": None, "usage": {}, "started_at": started, "finished_at": None,
              "error": None, "error_kind": None, "attempts": 0, "mode": "online"}
    try:
        raw = await client.chat.completions.with_raw_response.create(
            **body, extra_headers={SAMPLE_ID_HEADER: req.sample_id})
        record["attempts"] = openai_api.attempts(raw)
        record["response"], record["usage"] = openai_api.completion_text(raw.parse())
    except (openai.OpenAIError, ValueError) as exc:
        kind, message = openai_api.describe(exc, cfg.base_url, cfg.model, secret=api_key)
        if kind == "connection" and watch.replies == 0:  # retries spent, and not one reply yet
            kind, message = "unreachable", f"{message}; is the server running and the URL right?"
        if kind in openai_api.FATAL_KINDS:  # not chained: the client's error may quote the key
            raise AnnotationError(message) from None
        record["attempts"] = record["attempts"] or openai_api.attempts(exc)
        record["error_kind"], record["error"] = kind, message
    record["finished_at"] = utc_now()
    return record


async def _run(requests: list[ExpertRequest], cfg: AnnotationSettings, store: ResponseStore, load_images,
               report: AnnotationReport, api_key: str) -> list[dict]:
    from tqdm import tqdm

    watch = openai_api.Watch(cfg.dead_endpoint_timeout)
    client = openai_api.async_client(cfg.base_url, api_key, max_retries=cfg.max_retries,
                                     timeout=cfg.request_timeout, watch=watch)
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    done: list[dict] = []
    prices = cost.Prices.from_settings(cfg)
    bar = tqdm(total=len(requests), unit="req", desc="expert", disable=not cfg.progress, file=sys.stderr)
    running_usd, failed = 0.0, 0

    async def worker():
        nonlocal running_usd, failed
        while not queue.empty():
            req = queue.get_nowait()
            record = await _one(client, req, cfg, load_images, watch, api_key)
            store.append(record)  # written before the next await: a kill loses nothing finished
            done.append(record)
            running_usd += cost.tally([record], prices)["usd"]
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
        report.attempts.update(watch.counts)
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


def api_key_from_env(cfg: AnnotationSettings) -> str:
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise AnnotationError(f"set the environment variable {cfg.api_key_env} to the API key of {cfg.base_url}")
    return key


def load_train(cfg: AnnotationSettings):
    """The split to sample from; ``morelib.data`` refuses an empty one, naming the file."""
    from morelib.data import load_split

    return load_split(resolve_path(cfg.data_dir), cfg.split)


def prepare(cfg: AnnotationSettings, samples=None) -> list[ExpertRequest]:
    """Sample Stage 1, write the split ids, and build its expert requests (no call is made)."""
    samples = load_train(cfg) if samples is None else samples
    if not samples:
        raise AnnotationError(f"split {cfg.split!r} of {cfg.data_dir} has no facts; nothing to annotate")
    stage1, pool = stratified_split(samples, cfg.fraction, cfg.seed)
    write_split_ids(cfg.run_dir, stage1, pool)
    chosen = set(stage1)
    return plan_requests([s for s in samples if s.id in chosen], cfg)


def pending(requests: list[ExpertRequest], store: ResponseStore, model: str) -> list[ExpertRequest]:
    done = store.completed(model)
    return [r for r in requests if (r.sample_id, r.prompt_hash) not in done]


def annotate(cfg: AnnotationSettings, samples=None, load_images=None) -> AnnotationReport:
    """Annotate the Stage 1 sample; resumable: only requests without a successful record are sent.

    Raises ``CostConfirmationRequired`` before any call when the estimate of the pending
    requests exceeds ``cfg.cost_threshold`` and ``cfg.confirm_cost`` is not set, and
    ``AnnotationError`` when the endpoint rejects the key or the model or cannot be reached
    (what was answered until then is in the store).
    """
    if load_images is None:
        from morelib.data import load_images
    t0 = time.perf_counter()
    requests = prepare(cfg, samples)
    store = ResponseStore.for_run(cfg.run_dir)
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
        report.errors = Counter(r["error_kind"] for r in records if r["error"])
        report.actual = cost.tally(records, cost.Prices.from_settings(cfg))
    report.seconds = time.perf_counter() - t0
    return report


def save_report(run_dir: str | Path, report: AnnotationReport, cfg: AnnotationSettings) -> Path:
    """``annotation/report.json``: what the last run did and cost (settings included; the key never is)."""
    data = dataclasses.asdict(report)
    data["errors"], data["attempts"] = dict(report.errors), dict(report.attempts)
    data["config"] = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return write_json(RunLayout(run_dir).annotation_report, data, indent=1)


@contextlib.contextmanager
def expert_endpoint(cfg: AnnotationSettings):
    """``cfg`` as it should be called: with ``offline_expert`` the loopback toy expert is served
    for the duration (reading the toy facts in ``data_dir``) and ``base_url`` points at it."""
    if not cfg.offline_expert:
        yield cfg
        return
    from morelib.expert_server import ExpertConfig, ExpertServer

    meta = resolve_path(cfg.data_dir) / "toy_meta.jsonl"
    if not meta.is_file():
        raise AnnotationError(f"{meta}: no such file; offline_expert needs the toy data (notebook 00)")
    expert = ExpertConfig(str(meta), seed=cfg.seed, mistake_rate=cfg.expert_mistake_rate, model=cfg.model)
    with ExpertServer(expert) as server:
        os.environ.setdefault(cfg.api_key_env, "offline-expert-needs-no-key")
        yield dataclasses.replace(cfg, base_url=server.base_url)


# ----------------------------------------------------------------------------- Batch API


BATCH_MAX_BYTES = 190_000_000  # the Batch API accepts input files up to 200 MB
BATCH_MAX_REQUESTS = 50_000
CUSTOM_ID_SEP = "::"


def write_batch_files(cfg: AnnotationSettings, out_dir: str | Path | None = None, samples=None, load_images=None,
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
    todo = pending(requests, ResponseStore.for_run(cfg.run_dir), cfg.model)
    if cfg.limit is not None:
        todo = todo[: cfg.limit]
    check_budget(estimate_cost(todo, cfg), cfg, batch=True)
    out_dir = resolve_path(out_dir) if out_dir else RunLayout(cfg.run_dir).batch_inputs
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


def ingest_batch_results(cfg: AnnotationSettings, results_path: str | Path) -> dict:
    """Append a Batch API output (or error) file's lines to the store as records with ``mode="batch"``.

    Lines whose (sample, prompt hash) already has a successful record are skipped, so ingesting
    the same file twice adds nothing.
    """
    rows = read_jsonl(resolve_path(results_path), required=("custom_id",))
    counts = Counter()
    store = ResponseStore.for_run(cfg.run_dir)
    done = store.completed(cfg.model)
    now = utc_now()
    with store:
        for row in rows:
            sample_id, _, phash = str(row["custom_id"]).partition(CUSTOM_ID_SEP)
            if (sample_id, phash) in done:
                counts["skipped"] += 1
                continue
            response = row.get("response") or {}
            body = response.get("body") or {}
            record = {"sample_id": sample_id, "prompt_hash": phash, "model": cfg.model, "response": None,
                      "usage": {}, "started_at": None, "finished_at": now, "error": None, "error_kind": None,
                      "attempts": 1, "mode": "batch", "batch_request_id": response.get("request_id")}
            if row.get("error") or response.get("status_code") != 200:
                record["error_kind"] = "batch_error"
                record["error"] = json.dumps(row.get("error") or body.get("error") or
                                             {"status_code": response.get("status_code")})[:2000]
            else:
                try:
                    record["response"] = body["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    record["error_kind"], record["error"] = "malformed", "batch result without choices"
                usage = body.get("usage") or {}
                record["usage"] = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                record["model_reported"] = body.get("model")
            store.append(record)
            counts["error" if record["error"] else "ok"] += 1
    return dict(counts)


# ----------------------------------------------------------------------------- command line


COMMANDS = {
    "run": "annotate the Stage 1 sample (resumable: only unanswered requests are sent)",
    "estimate": "print the cost estimate of the pending requests; no call is made",
    "batch-write": "write the pending requests as Batch API input files",
    "batch-ingest": "add a Batch API output file to the expert store",
}


def build_parser() -> argparse.ArgumentParser:
    """``COMMAND [--FIELD VALUE ...]``: one option per field of ``AnnotationSettings`` (its help is the field's)."""
    from morelib import cli

    parser = cli.make_parser("python -m morelib.annotate", __doc__.split("\n")[0])
    commands = cli.add_commands(parser)
    for name, text in COMMANDS.items():
        p = cli.add_command(commands, name, text, [AnnotationSettings])
        p.add_argument("--profile", default=None,
                       help=f"take the defaults from this profile's common and {SECTION} sections (e.g. toy)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override one setting, as KEY=VALUE or {SECTION}.KEY=VALUE (repeatable)")
        if name == "batch-write":
            p.add_argument("--out-dir", default=None, help="where the files go (default: the run's annotation/batch)")
        if name == "batch-ingest":
            p.add_argument("--results", required=True, help="the Batch API output JSONL")
    return parser


def parse_settings(argv: list[str]) -> tuple[str, AnnotationSettings, dict]:
    """(command, settings, the command's own options). Precedence: field defaults, then
    ``--profile``, then ``--set``, then explicit options."""
    from morelib.config import build_settings, load_settings

    parser = build_parser()
    args = parser.parse_args(argv)
    names = [f.name for f in dataclasses.fields(AnnotationSettings) if f.init]
    if args.profile or args.set:
        # An explicit --run-dir also moves the profile's "{run_dir}/..." paths.
        run_dir_given = any(a.split("=")[0] in ("--run-dir", "--run_dir") for a in argv)
        base = load_settings(SECTION, args.profile or "toy", args.set, run_dir=args.run_dir if run_dir_given else None)
        parser._subparsers._group_actions[0].choices[args.command].set_defaults(
            **{name: getattr(base, name) for name in names})
        args = parser.parse_args(argv)  # again, so that explicit options win over the profile
    values = {name: getattr(args, name) for name in names}
    run_dir = str(resolve_path(values["run_dir"]))
    values = {k: v.replace("{run_dir}", run_dir) if isinstance(v, str) else v for k, v in values.items()}
    extra = {k: getattr(args, k) for k in ("out_dir", "results") if hasattr(args, k)}
    return args.command, build_settings(SECTION, values), extra


def _run_command(cfg: AnnotationSettings) -> int:
    if cfg.write_batch_input:
        for path in write_batch_files(cfg):
            print(path)
        return 0
    with expert_endpoint(cfg) as cfg:
        report = annotate(cfg)
    save_report(cfg.run_dir, report, cfg)
    print(report.summary())
    if report.failed:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(report.errors.items()))
        print(f"error: {report.failed} of {report.sent} requests failed ({kinds}); "
              f"see {RunLayout(cfg.run_dir).expert_store}; run again to retry them", file=sys.stderr)
        return 1
    return 0


def _command(argv: list[str]) -> int:
    command, cfg, extra = parse_settings(argv)
    if command == "estimate":
        requests = prepare(cfg)
        todo = pending(requests, ResponseStore.for_run(cfg.run_dir), cfg.model)
        print(f"Stage 1: {len(requests)} requests, {len(todo)} pending")
        print(estimate_cost(todo, cfg).summary())
    elif command == "run":
        return _run_command(cfg)
    elif command == "batch-write":
        for path in write_batch_files(cfg, extra["out_dir"]):
            print(path)
    else:
        print(ingest_batch_results(cfg, extra["results"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    from morelib import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not debug:  # one line per HTTP request and per retry: too much for a run of thousands
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return cli.run(build_parser(), argv, lambda args: _command(argv))


if __name__ == "__main__":
    sys.exit(main())
