"""Stage 1 annotation: sample 25% per relation, ask an expert for six-step reasoning, keep every answer.

The pieces, in the order a run uses them, each in its module:

1. ``morelib.splits.stratified_split``: a seeded ``fraction`` of every relation goes to Stage 1;
   the rest is the Stage 2 pool (``annotation/split_ids.json``).
2. ``morelib.expert_requests``: the paper's three-part expert prompt (task description, six
   stepwise instructions, the gold answer) from one replaceable template file, and the requests.
3. ``morelib.cost.estimate_cost`` and ``check_budget``: before any call, from token counts.
4. ``annotate`` (here): the official ``openai`` client (through ``morelib.openai_api``, which leaves
   retries, backoff and Retry-After to it) against any OpenAI-compatible endpoint, many
   requests at once (asyncio).
5. ``morelib.expert_store.ResponseStore``: the append-only expert store
   (``annotation/responses.jsonl``), one line written per finished request, so a rerun skips
   finished work and a killed run loses only the requests in flight.
6. ``morelib.batch_api``: the same requests through the Batch API.
7. the command line (here), for all of them.

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
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import openai

from morelib import cost, openai_api
from morelib.batch_api import ingest_batch_results, write_batch_files
from morelib.cost import check_budget, estimate_cost
from morelib.expert_requests import ExpertRequest, prepare, request_body
from morelib.expert_store import ResponseStore, pending, utc_now
from morelib.files import write_json
from morelib.layout import RunLayout, resolve_path
from morelib.settings import AnnotationSettings

log = logging.getLogger(__name__)

SECTION = "01_annotation"  # the profile section of these settings
# Sent with each online request so the offline expert can find the sample's toy facts; the
# real API ignores unknown headers and the student never sees it.
SAMPLE_ID_HEADER = "X-Morelib-Sample-Id"


class AnnotationError(RuntimeError):
    """The run cannot go on (the message is one line): a rejected key or model, a dead endpoint."""


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
