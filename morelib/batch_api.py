"""The Stage 1 requests through OpenAI's Batch API: the pending requests written as input files,
and a downloaded output file added to the expert store (``mode="batch"``), at the Batch API's
price. The same requests, prompt hashes and store as online annotation (:mod:`morelib.annotate`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from morelib.cost import check_budget, estimate_cost
from morelib.expert_requests import prepare, request_body
from morelib.expert_store import ResponseStore, pending, utc_now
from morelib.files import read_jsonl
from morelib.layout import RunLayout, resolve_path
from morelib.settings import AnnotationSettings

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
