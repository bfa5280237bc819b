"""The expert store (``annotation/responses.jsonl``): one record per finished request, appended
and never rewritten, so a rerun skips finished work and a killed run loses only the requests in
flight. Online requests (:mod:`morelib.annotate`) and Batch API results (:mod:`morelib.batch_api`)
end here; filtering and the trace read the latest record of each fact."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from morelib.expert_requests import ExpertRequest
from morelib.files import JsonlStore
from morelib.layout import RunLayout, resolve_path


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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



def pending(requests: list[ExpertRequest], store: ResponseStore, model: str) -> list[ExpertRequest]:
    """The requests without a successful record of ``model`` for their exact prompt (what a rerun sends)."""
    done = store.completed(model)
    return [r for r in requests if (r.sample_id, r.prompt_hash) not in done]
