"""Stage 1 annotation: sampling, the expert prompt, cost, the resumable client, the store, Batch API."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from morelib import annotate, cost
from morelib.annotate import AnnotationConfig, ResponseStore
from morelib.data import load_split
from morelib.expert_server import ExpertConfig, ExpertServer, Faults
from morelib.filtering import check_response

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from morelib.toy import ToyConfig, generate

    return generate(tmp_path_factory.mktemp("toy") / "data", ToyConfig(seed=1, train=160, valid=10, test=10))


@pytest.fixture(scope="module")
def train(data_dir):
    return load_split(data_dir, "train")


def config(data_dir, run_dir, **kw):
    base = dict(data_dir=str(data_dir), run_dir=str(run_dir), model="toy-expert", image_detail="low",
                concurrency=4, request_timeout=5.0, backoff_base=0.01, backoff_max=0.05, progress=False)
    return AnnotationConfig(**(base | kw))


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


def successes(run_dir):
    return [r for r in ResponseStore(annotate.store_path(run_dir)).records() if not r["error"]]


# ----------------------------------------------------------------------------- sampling and prompt


def test_stratified_split_takes_a_quarter_of_every_relation(train):
    stage1, pool = annotate.stratified_split(train, 0.25, seed=0)
    assert set(stage1).isdisjoint(pool) and sorted(stage1 + pool) == sorted(s.id for s in train)
    label_of = {s.id: s.label for s in train}
    total, chosen = Counter(s.label for s in train), Counter(label_of[i] for i in stage1)
    for label, n in total.items():
        assert chosen[label] == max(1, int(0.25 * n + 0.5)), label
    assert annotate.stratified_split(train, 0.25, seed=0) == (stage1, pool)
    assert annotate.stratified_split(train, 0.25, seed=1)[0] != stage1
    assert len(annotate.stratified_split(train, 0.5, seed=0)[0]) > len(stage1)
    with pytest.raises(ValueError, match="fraction"):
        annotate.stratified_split(train, 0.0)


def test_expert_prompt_has_the_three_parts(train):
    relation = next(s for s in train if s.label != "none")
    none = next(s for s in train if s.label == "none")
    text = annotate.expert_prompt_text(relation)
    assert text.startswith(annotate.task_description(relation))
    assert all(f"Step {i}:" in text for i in range(1, 7))
    obj_type, ent_type = relation.label.split("/")[1:3]
    assert f"their relation is {relation.label}" in text and f"object is of type {obj_type}" in text
    assert f"is of type {ent_type}" in text and "do not mention" in text
    text = annotate.expert_prompt_text(none)
    assert "there is no relation" in text and "of type" not in text.split("Candidate relations")[1]


def test_template_is_replaceable_and_changes_the_hash(train, tmp_path):
    s = train[0]
    default = annotate.expert_prompt_text(s)
    custom = tmp_path / "mine.txt"
    custom.write_text("Look at {entity}. {gold_statement} Labels: {labels}. Literal {{braces}}.")
    text = annotate.expert_prompt_text(s, custom.read_text())
    assert text.startswith(f"Look at {s.entity}.") and "{braces}" in text
    assert annotate.prompt_hash(text, s, "low") != annotate.prompt_hash(default, s, "low")
    assert annotate.prompt_hash(default, s, "low") != annotate.prompt_hash(default, s, "high")
    custom.write_text("{entity} {no_such_field}")
    with pytest.raises(ValueError, match=r"mine.txt: unknown placeholder 'no_such_field'"):
        annotate.plan_requests([s], AnnotationConfig(template_path=str(custom)))


def test_request_body_sends_both_images(train, data_dir):
    from morelib.data import load_images

    cfg = config(data_dir, "unused", image_detail="high")
    req = annotate.plan_requests(train[:1], cfg)[0]
    body = annotate.request_body(req, cfg, load_images)
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") and p["image_url"]["detail"] == "high"
               for p in parts[:2])
    assert parts[2]["text"] == req.prompt_text and body["model"] == "toy-expert"


# ----------------------------------------------------------------------------- cost


@pytest.mark.parametrize("size, detail, tokens", [
    ((1024, 683), "high", 765),     # 2 x 2 tiles
    ((300, 400), "high", 255),      # one tile
    ((1024, 1024), "high", 765),    # -> 768 x 768: 4 tiles (OpenAI's worked example)
    ((2048, 4096), "high", 1105),   # -> 1024 x 2048 -> 768 x 1536: 2 x 3 tiles
    ((4000, 3000), "low", 85),
])
def test_image_tokens(size, detail, tokens):
    assert cost.image_tokens(*size, detail) == tokens


def test_prices_and_tally():
    prices = cost.Prices()
    assert prices.cost(1_000_000, 0) == pytest.approx(2.5) and prices.cost(0, 1_000_000) == pytest.approx(10.0)
    assert prices.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(6.25)
    records = [{"usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
               {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}, "mode": "batch"},
               {"usage": {}, "error": "x"}]
    assert cost.tally(records, prices)["usd"] == pytest.approx(0.0035 * 1.5)


def test_spending_above_the_threshold_needs_confirmation(data_dir, tmp_path):
    cfg = config(data_dir, tmp_path, base_url="http://127.0.0.1:9/v1", cost_threshold=0.01)
    with pytest.raises(annotate.CostConfirmationRequired, match="confirm_cost"):
        annotate.annotate(cfg)
    assert not annotate.store_path(tmp_path).exists()  # refused before any call
    assert annotate.main(["run", "--data-dir", str(data_dir), "--run-dir", str(tmp_path),
                          "--cost-threshold", "0.01", "--image-detail", "low"]) == 2


# ----------------------------------------------------------------------------- the client


def test_faults_end_in_exactly_one_record_each_and_the_tally_is_right(data_dir, train, tmp_path):
    stage1 = annotate.stratified_split(train, 0.25, 0)[0]
    script = {stage1[0]: ["429", "429"], stage1[1]: ["500", "timeout"], stage1[2]: ["malformed", "slow"],
              stage1[3]: ["timeout", "500", "429", "malformed"]}
    # The timeout leaves ample room for a normal reply on a loaded 2-core machine, so every
    # timeout the client sees is one the server injected.
    faults = Faults(retry_after=0.3, hang=4.0, slow=0.2, script=script, rate_429=0.1, rate_500=0.1,
                    rate_malformed=0.05, seed=1)
    with ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), mistake_rate=0.0, faults=faults)) as server:
        cfg = config(data_dir, tmp_path, base_url=server.base_url, request_timeout=2.5, concurrency=8)
        report = annotate.annotate(cfg)
        injected = dict(server.injected)
    records = ResponseStore(annotate.store_path(tmp_path)).records()
    assert sorted(r["sample_id"] for r in records) == sorted(stage1)  # exactly one record per sample
    assert all(r["error"] is None and check_response(r["response"], next(
        s.label for s in train if s.id == r["sample_id"]))[0] is None for r in records)
    kinds = {"429": "rate_limit", "500": "server_error", "timeout": "timeout", "malformed": "malformed"}
    assert dict(report.retries) == {kinds[k]: n for k, n in injected.items() if k in kinds}
    assert report.sent == report.succeeded == len(stage1) and report.failed == 0
    by_id = {r["sample_id"]: r for r in records}
    # the script runs first; after it the random rates apply
    assert by_id[stage1[0]]["attempts"] >= 3 and by_id[stage1[3]]["attempts"] >= 5
    waited = (datetime.fromisoformat(by_id[stage1[0]]["finished_at"])
              - datetime.fromisoformat(by_id[stage1[0]]["started_at"])).total_seconds()
    assert waited >= 0.6  # two Retry-After: 0.3 honoured, though the backoff alone is <= 0.05 s
    usage = sum(r["usage"]["prompt_tokens"] * 2.5 + r["usage"]["completion_tokens"] * 10 for r in records) / 1e6
    assert report.actual["usd"] == pytest.approx(usage) and report.actual["records"] == len(stage1)


def test_a_request_that_keeps_failing_ends_in_one_error_record_and_is_retried_next_run(data_dir, train, tmp_path):
    stage1 = annotate.stratified_split(train, 0.25, 0)[0]
    faults = Faults(script={stage1[0]: ["500"] * 3})
    with ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), faults=faults)) as server:
        cfg = config(data_dir, tmp_path, base_url=server.base_url, max_retries=2)
        first = annotate.annotate(cfg)
        second = annotate.annotate(cfg)
    assert first.failed == 1 and first.retries["server_error"] == 3
    assert second.skipped == len(stage1) - 1 and second.sent == second.succeeded == 1
    records = ResponseStore(annotate.store_path(tmp_path)).records()
    assert [r["error"] is not None for r in records if r["sample_id"] == stage1[0]] == [True, False]


def test_rerun_skips_done_work_and_a_new_template_is_not_reused(data_dir, tmp_path):
    with ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"))) as server:
        cfg = config(data_dir, tmp_path, base_url=server.base_url, limit=5)
        assert annotate.annotate(cfg).sent == 5
        cfg.limit = None
        report = annotate.annotate(cfg)
        assert report.skipped == 5 and report.sent == report.planned - 5
        assert annotate.annotate(cfg).sent == 0
        template = tmp_path / "t.txt"
        template.write_text(annotate.EXPERT_TEMPLATE_PATH.read_text() + "\nBe brief.")
        cfg.template_path = str(template)
        changed = annotate.annotate(cfg)
        assert changed.skipped == 0 and changed.sent == changed.planned
    hashes = Counter(r["prompt_hash"] for r in successes(tmp_path))
    assert len(hashes) == 2 * report.planned and set(hashes.values()) == {1}


def test_store_ignores_and_repairs_a_torn_last_line(tmp_path):
    store = ResponseStore(tmp_path / "r.jsonl")
    good = {"sample_id": "a", "prompt_hash": "h", "model": "m", "response": "x", "error": None}
    store.path.write_text(json.dumps(good) + "\n" + '{"sample_id": "b", "prom')
    assert store.records() == [good]
    with store:
        store.append(good | {"sample_id": "c"})
    assert [r["sample_id"] for r in store.records()] == ["a", "c"]
    assert store.path.read_text().count("\n") == 2
    store.path.write_text(json.dumps(good) + "\nnot json\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl:2: corrupt record"):
        store.records()
    store.path.write_text(json.dumps({"sample_id": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl:1: record lacks field 'prompt_hash'"):
        store.records()


def test_one_writer_at_a_time(tmp_path):
    with ResponseStore(tmp_path / "r.jsonl"):
        with pytest.raises(RuntimeError, match="another annotation run"):
            ResponseStore(tmp_path / "r.jsonl").open()


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(data_dir, train, tmp_path):
    stage1 = annotate.stratified_split(train, 0.25, 0)[0]
    store = annotate.store_path(tmp_path)
    faults = Faults(latency=0.15)
    with ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), faults=faults)) as server:
        args = ["run", "--data-dir", str(data_dir), "--run-dir", str(tmp_path), "--base-url", server.base_url,
                "--model", "toy-expert", "--image-detail", "low", "--concurrency", "2", "--no-progress"]
        proc = subprocess.Popen([sys.executable, "-m", "morelib.annotate", *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline and (not store.exists() or store.read_text().count("\n") < 6):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = store.read_text().count("\n")
        assert 6 <= before < len(stage1)  # killed mid-run
        with open(store, "a") as f:  # what a kill during a write would leave
            f.write('{"sample_id": "train-1", "prompt_hash": "torn')
        report = annotate.annotate(config(data_dir, tmp_path, base_url=server.base_url))
    assert report.skipped == before and report.sent == len(stage1) - before
    lines = store.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses: the torn one is gone
    assert sorted(r["sample_id"] for r in records) == sorted(stage1)  # no loss, no duplicate


# ----------------------------------------------------------------------------- Batch API


def test_batch_files_and_ingest(data_dir, train, tmp_path):
    cfg = config(data_dir, tmp_path)
    paths = annotate.write_batch_files(cfg, max_bytes=40_000)
    assert len(paths) > 1  # split by size
    lines = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    stage1 = annotate.stratified_split(train, 0.25, 0)[0]
    assert [line["custom_id"].split("::")[0] for line in lines] == stage1
    assert all(line["url"] == "/v1/chat/completions" and line["method"] == "POST" for line in lines)
    assert len(lines[0]["body"]["messages"][0]["content"]) == 3

    # a Batch API output file: answers from the offline expert, one failed request
    from morelib.expert_server import ExpertServer as Server

    with Server(ExpertConfig(str(data_dir / "toy_meta.jsonl"), mistake_rate=0.0)) as server:
        out = []
        for i, line in enumerate(lines):
            sample_id = line["custom_id"].split("::")[0]
            if i == 1:
                out.append({"id": f"b{i}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "server_error", "message": "failed"}})
                continue
            body = server.completion(line["body"], sample_id)
            out.append({"id": f"b{i}", "custom_id": line["custom_id"],
                        "response": {"status_code": 200, "request_id": f"r{i}", "body": body}, "error": None})
    results = tmp_path / "out.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in out))
    assert annotate.ingest_batch_results(cfg, results) == {"ok": len(lines) - 1, "error": 1}
    assert annotate.ingest_batch_results(cfg, results) == {"skipped": len(lines) - 1, "error": 1}
    records = ResponseStore(annotate.store_path(tmp_path)).records()
    ok = [r for r in records if not r["error"]]
    assert len(ok) == len(lines) - 1 and all(r["mode"] == "batch" for r in records)
    online = sum(cfg.prices.cost(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) for r in ok)
    assert cost.tally(ok, cfg.prices)["usd"] == pytest.approx(online / 2)
    # only the failed request is still pending
    assert len(annotate.write_batch_files(cfg)) == 1
    results.write_text("not json\n")
    with pytest.raises(ValueError, match="out.jsonl:1"):
        annotate.ingest_batch_results(cfg, results)


# ----------------------------------------------------------------------------- notebook


def test_notebook_never_leaks_the_api_key(data_dir, tmp_path):
    """Run notebook 01 with a sentinel key in the environment; the key appears nowhere."""
    import shutil

    import papermill
    from jupyter_client.kernelspec import KernelSpecManager

    sentinel = "sk-SENTINEL-7f3a9c"
    run_dir = tmp_path / "run"
    shutil.copytree(data_dir, run_dir / "data")
    kernel = "morelib" if "morelib" in KernelSpecManager().find_kernel_specs() else "python3"
    os.environ["OPENAI_API_KEY"] = sentinel  # the kernel inherits it (monkeypatch restores it)
    out = tmp_path / "01_annotation.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "01_annotation.ipynb"), str(out), kernel_name=kernel,
                               parameters={"run_dir": str(run_dir), "data_dir": str(run_dir / "data")},
                               cwd=str(REPO), progress_bar=False)
    assert successes(run_dir)  # the run really happened
    leaks = [p for p in [out, *run_dir.rglob("*")] if p.is_file() and sentinel.encode() in p.read_bytes()]
    assert leaks == []
