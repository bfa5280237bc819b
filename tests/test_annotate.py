"""Stage 1 annotation: sampling, the expert prompt, cost, the resumable client, the store, Batch API,
and the command line's failures."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from morelib import annotate, batch_api, cost, expert_requests, prompts, splits
from morelib.expert_store import ResponseStore
from morelib.data import load_split
from morelib.expert_server import ExpertConfig, ExpertServer, Faults
from morelib.filtering import check_response
from morelib.layout import RunLayout
from morelib.settings import AnnotationSettings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(toy_world):
    """The session's toy data (conftest.toy_world; read-only: runs write into their tmp_path)."""
    return toy_world.data_dir


@pytest.fixture(scope="module")
def train(data_dir):
    return load_split(data_dir, "train")


@pytest.fixture(scope="module")
def stage1(train):
    return splits.stratified_split(train, 0.25, 0)[0]


def config(data_dir, run_dir, **kw):
    base = dict(data_dir=str(data_dir), run_dir=str(run_dir), model="toy-expert", image_detail="low",
                concurrency=4, request_timeout=5.0, progress=False)
    return AnnotationSettings(**(base | kw))


def cli_args(command, data_dir, run_dir, *extra):
    return [command, "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--model", "toy-expert",
            "--image-detail", "low", "--request-timeout", "5", *map(str, extra)]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


@pytest.fixture
def expert(data_dir):
    """A function that serves the offline expert with the given faults and settings."""
    servers = []

    def serve(faults=None, **kw):
        servers.append(ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), faults=faults or Faults(), **kw)))
        return servers[-1].start()

    yield serve
    for server in servers:
        server.stop()


def records(run_dir):
    return ResponseStore.for_run(run_dir).records()


def successes(run_dir):
    return [r for r in records(run_dir) if not r["error"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- sampling and prompt


def test_stratified_split_takes_a_quarter_of_every_relation(train):
    stage1, pool = splits.stratified_split(train, 0.25, seed=0)
    assert set(stage1).isdisjoint(pool) and sorted(stage1 + pool) == sorted(s.id for s in train)
    label_of = {s.id: s.label for s in train}
    total, chosen = Counter(s.label for s in train), Counter(label_of[i] for i in stage1)
    for label, n in total.items():
        assert chosen[label] == max(1, round(0.25 * n)), label
    assert splits.stratified_split(train, 0.25, seed=0) == (stage1, pool)
    assert splits.stratified_split(train, 0.25, seed=1)[0] != stage1
    assert len(splits.stratified_split(train, 0.5, seed=0)[0]) > len(stage1)
    with pytest.raises(ValueError, match="fraction"):
        splits.stratified_split(train, 0.0, seed=0)


def test_sampling_rounds_half_to_even_as_the_stage2_mix_does():
    """One rounding rule: 25% of 10 facts is 2.5 -> 2, of 6 is 1.5 -> 2, of 2 is 0.5 -> 0 -> at least 1."""
    from types import SimpleNamespace

    from morelib.mixing import easy_counts

    facts = [SimpleNamespace(id=f"{label}-{i}", label=label) for label, n in (("a", 10), ("b", 6), ("c", 2))
             for i in range(n)]
    stage1, _ = splits.stratified_split(facts, 0.25, seed=0)
    assert Counter(i.split("-")[0] for i in stage1) == {"a": 2, "b": 2, "c": 1}
    assert easy_counts(5, 100, 2, 0.5)[1] == 2  # 2.5 -> 2 in the mix as well


def test_split_ids_round_trip_and_a_broken_file_is_named(tmp_path):
    path = splits.write_split_ids(tmp_path, ["train-1"], ["train-2", "train-3"])
    assert path == RunLayout(tmp_path).split_ids
    assert splits.read_split_ids(tmp_path) == {"stage1": ["train-1"], "stage2_pool": ["train-2", "train-3"]}
    path.write_text('{"stage1": "train-1"}')
    with pytest.raises(ValueError, match=r"split_ids.json: field 'stage1'"):
        splits.read_split_ids(tmp_path)


def test_the_expert_prompt_asks_for_no_length():
    """The paper's prompt sets no length, and its length reward pays reasoning over 1,024 characters:
    our template must not ask the expert to keep its steps short."""
    template = expert_requests.EXPERT_TEMPLATE_PATH.read_text().lower()
    assert "short" not in template and "brief" not in template and "concise" not in template


def test_expert_prompt_has_the_three_parts(train):
    relation = next(s for s in train if s.label != "none")
    none = next(s for s in train if s.label == "none")
    text = expert_requests.expert_prompt_text(relation)
    assert text.startswith(prompts.task_description(relation))
    assert all(f"Step {i}:" in text for i in range(1, 7))
    obj_type, ent_type = relation.label.split("/")[1:3]
    assert f"their relation is {relation.label}" in text and f"object is of type {obj_type}" in text
    assert f"is of type {ent_type}" in text and "do not mention" in text
    text = expert_requests.expert_prompt_text(none)
    assert "there is no relation" in text and "of type" not in text.split("Candidate relations")[1]


def test_template_is_replaceable_and_changes_the_hash(train, tmp_path):
    s = train[0]
    default = expert_requests.expert_prompt_text(s)
    custom = tmp_path / "mine.txt"
    custom.write_text("Look at {entity}. {gold_statement} Labels: {labels}. Literal {{braces}}.")
    text = expert_requests.expert_prompt_text(s, custom.read_text())
    assert text.startswith(f"Look at {s.entity}.") and "{braces}" in text
    assert expert_requests.prompt_hash(text, s, "low") != expert_requests.prompt_hash(default, s, "low")
    assert expert_requests.prompt_hash(default, s, "low") != expert_requests.prompt_hash(default, s, "high")
    custom.write_text("{entity} {no_such_field}")
    with pytest.raises(ValueError, match=r"mine.txt: unknown placeholder 'no_such_field'"):
        expert_requests.plan_requests([s], AnnotationSettings(template_path=str(custom)))


def test_request_body_sends_both_images(train, data_dir):
    from morelib.data import load_images

    cfg = config(data_dir, "unused", image_detail="high")
    req = expert_requests.plan_requests(train[:1], cfg)[0]
    body = expert_requests.request_body(req, cfg, load_images)
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
    settings = AnnotationSettings(price_input_per_m=1.0, price_output_per_m=4.0, batch_discount=0.25)
    assert cost.Prices.from_settings(settings) == cost.Prices(1.0, 4.0, 0.25)


def test_spending_above_the_threshold_needs_confirmation(data_dir, tmp_path, capsys):
    cfg = config(data_dir, tmp_path, base_url="http://127.0.0.1:9/v1", cost_threshold=0.01)
    with pytest.raises(cost.CostConfirmationRequired, match="confirm_cost"):
        annotate.annotate(cfg)
    assert not RunLayout(tmp_path).expert_store.exists()  # refused before any call
    assert annotate.main(cli_args("run", data_dir, tmp_path, "--cost-threshold", "0.01")) == 1
    assert "error: estimated cost" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the client


def test_faults_end_in_exactly_one_record_each_and_the_tally_is_right(data_dir, train, stage1, tmp_path, expert):
    script = {stage1[0]: ["429", "429"], stage1[1]: ["500", "timeout"],
              stage1[2]: ["malformed", "empty", "null", "truncated"],
              stage1[3]: ["timeout", "500", "429"]}
    # Retry-After (1.2 s) is longer than the client's own first two backoffs (0.5 s + 1 s), so
    # the wait below shows it was honoured. The timeout leaves ample room for a normal reply on
    # a loaded 2-core machine, so every timeout the client sees is one the server injected.
    faults = Faults(retry_after=1.2, hang=4.0, slow=0.2, script=script, rate_429=0.05, rate_500=0.1, seed=1)
    server = expert(faults, mistake_rate=0.0)
    cfg = config(data_dir, tmp_path, base_url=server.base_url, request_timeout=2.5, concurrency=8)
    report = annotate.annotate(cfg)
    injected = dict(server.injected)
    first = records(tmp_path)
    assert sorted(r["sample_id"] for r in first) == sorted(stage1)  # exactly one record per sample
    by_id = {r["sample_id"]: r for r in first}
    gold = {s.id: s.label for s in train}

    # broken 200s (not JSON, no choices, null content, cut short) are retried like a 5xx: every sample ends done
    assert by_id[stage1[2]]["attempts"] == 5
    assert all(r["error"] is None and check_response(r["response"], gold[r["sample_id"]])[0] is None
               for r in by_id.values())
    assert report.sent == report.succeeded == len(stage1) and report.failed == 0

    # every attempt is counted by its outcome, the client's retries included
    kinds = {"429": "rate_limit", "500": "server_error", "timeout": "timeout", "malformed": "malformed",
             "empty": "empty", "null": "empty", "truncated": "connection"}
    expected = Counter()
    for kind, n in injected.items():
        expected[kinds[kind]] += n
    assert expected == Counter({k: n for k, n in report.attempts.items() if k != "ok"})
    assert report.attempts["ok"] == len(stage1)
    assert by_id[stage1[0]]["attempts"] >= 3 and by_id[stage1[3]]["attempts"] >= 4
    waited = (datetime.fromisoformat(by_id[stage1[0]]["finished_at"])
              - datetime.fromisoformat(by_id[stage1[0]]["started_at"])).total_seconds()
    assert waited >= 2.4
    ok = list(by_id.values())
    usd = sum(r["usage"]["prompt_tokens"] * 2.5 + r["usage"]["completion_tokens"] * 10 for r in ok) / 1e6
    assert report.actual["usd"] == pytest.approx(usd) and report.actual["records"] == len(stage1)
    assert annotate.annotate(cfg).sent == 0


def test_an_empty_reply_is_a_failure_never_a_result_and_is_sent_again(data_dir, stage1, tmp_path, expert):
    server = expert(Faults(script={stage1[0]: ["null", "empty", "null"]}))
    cfg = config(data_dir, tmp_path, base_url=server.base_url, max_retries=2)
    first = annotate.annotate(cfg)
    assert first.failed == 1 and first.errors == {"empty": 1} and first.attempts["empty"] == 3
    (failed,) = [r for r in records(tmp_path) if r["sample_id"] == stage1[0]]
    assert failed["response"] is None and failed["error_kind"] == "empty" and failed["attempts"] == 3
    second = annotate.annotate(cfg)
    assert second.skipped == len(stage1) - 1 and second.sent == second.succeeded == 1
    assert [bool(r["response"]) for r in records(tmp_path) if r["sample_id"] == stage1[0]] == [False, True]


def test_a_request_that_keeps_failing_ends_in_one_error_record_and_is_retried_next_run(
        data_dir, stage1, tmp_path, expert):
    server = expert(Faults(script={stage1[0]: ["500"] * 3}))
    cfg = config(data_dir, tmp_path, base_url=server.base_url, max_retries=2)
    first = annotate.annotate(cfg)
    assert first.failed == 1 and first.errors == {"server_error": 1} and first.attempts["server_error"] == 3
    failed = [r for r in records(tmp_path) if r["error"]]
    assert len(failed) == 1 and failed[0]["attempts"] == 3 and "HTTP 500" in failed[0]["error"]
    second = annotate.annotate(cfg)
    assert second.skipped == len(stage1) - 1 and second.sent == second.succeeded == 1
    assert [r["error"] is not None for r in records(tmp_path) if r["sample_id"] == stage1[0]] == [True, False]


def test_rerun_skips_done_work_and_a_new_template_is_not_reused(data_dir, tmp_path, expert):
    server = expert()
    cfg = config(data_dir, tmp_path, base_url=server.base_url, limit=5)
    assert annotate.annotate(cfg).sent == 5
    cfg.limit = None
    report = annotate.annotate(cfg)
    assert report.skipped == 5 and report.sent == report.planned - 5
    assert annotate.annotate(cfg).sent == 0
    template = tmp_path / "t.txt"
    template.write_text(expert_requests.EXPERT_TEMPLATE_PATH.read_text() + "\nBe brief.")
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
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a JSON object"):
        store.records()
    store.path.write_text(json.dumps({"sample_id": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl:1: field 'prompt_hash': missing"):
        store.records()


def test_one_writer_at_a_time(tmp_path):
    with ResponseStore(tmp_path / "r.jsonl"):
        with pytest.raises(RuntimeError, match="another process is writing"):
            ResponseStore(tmp_path / "r.jsonl").open()


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(data_dir, stage1, tmp_path, expert):
    store = RunLayout(tmp_path).expert_store
    server = expert(Faults(latency=0.15))
    proc = subprocess.Popen([sys.executable, "-m", "morelib.annotate",
                             *cli_args("run", data_dir, tmp_path, "--base-url", server.base_url, "--concurrency", 2)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Generous: the child's imports alone took over a minute on a loaded 2-core machine (the loop
    # ends as soon as 6 answers are stored).
    deadline = time.time() + 240
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
    rows = [json.loads(line) for line in lines]  # every line parses: the torn one is gone
    assert sorted(r["sample_id"] for r in rows) == sorted(stage1)  # no loss, no duplicate


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in annotate.COMMANDS)])
def test_help_works_for_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        annotate.main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m morelib.annotate")
    if argv[0] == "run":  # every setting is a flag, with its documented help
        assert "--dead-endpoint-timeout" in out and "25%" in out


def test_a_dead_endpoint_stops_the_run_within_its_bound(data_dir, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    t0 = time.perf_counter()
    code = annotate.main(cli_args("run", data_dir, tmp_path, "--base-url", url, "--dead-endpoint-timeout", "1"))
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 1 and seconds < 10
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and url in lines[0] and "'toy-expert'" in lines[0] and "cannot connect" in lines[0]
    assert "Traceback" not in err
    assert successes(tmp_path) == []  # every request stays pending for the next run


def test_a_rejected_model_stops_the_run_at_once(data_dir, tmp_path, capsys, expert):
    server = expert()
    code = annotate.main(cli_args("run", data_dir, tmp_path, "--base-url", server.base_url, "--model", "gpt-4o"))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert server.base_url in line and "'gpt-4o'" in line and "HTTP 404" in line
    assert records(tmp_path) == []  # no error records: nothing was the samples' fault
    assert server.replies == 0


def test_a_rejected_key_stops_the_run_and_is_never_shown(data_dir, tmp_path, capsys, expert, monkeypatch):
    secret = "sk-wrong-SECRET-5e1d"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    server = expert(api_key="sk-the-right-one")
    code = annotate.main(cli_args("run", data_dir, tmp_path, "--base-url", server.base_url))
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "HTTP 401" in line and server.base_url in line and "'toy-expert'" in line
    assert secret not in err and records(tmp_path) == []


def test_a_run_with_failed_requests_exits_non_zero_and_counts_them(data_dir, stage1, tmp_path, capsys, expert):
    server = expert(Faults(script={stage1[0]: ["500"] * 2, stage1[1]: ["malformed"] * 2}))
    code = annotate.main(cli_args("run", data_dir, tmp_path, "--base-url", server.base_url, "--max-retries", 1))
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: 2 of {len(stage1)} requests failed (malformed: 1, server_error: 1)" in err
    report = json.loads(RunLayout(tmp_path).annotation_report.read_text())
    assert report["failed"] == 2 and report["errors"] == {"malformed": 1, "server_error": 1}
    assert "sk-test" not in RunLayout(tmp_path).annotation_report.read_text()
    assert annotate.main(cli_args("run", data_dir, tmp_path, "--base-url", server.base_url)) == 0  # the retry


def test_an_empty_split_is_refused(data_dir, tmp_path, capsys):
    empty = tmp_path / "data"
    shutil.copytree(data_dir / "txt", empty / "txt")
    (empty / "txt" / "train.txt").write_text("\n")
    code = annotate.main(cli_args("estimate", empty, tmp_path / "run"))
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {empty / 'txt' / 'train.txt'}:") and "no facts" in err
    assert not RunLayout(tmp_path / "run").split_ids.exists()


def test_profile_and_set_give_the_defaults_and_flags_win(data_dir, tmp_path, capsys):
    argv = ["estimate", "--profile", "toy", "--set", "fraction=0.5", "--data-dir", str(data_dir),
            "--run-dir", str(tmp_path), "--image-detail", "high"]
    command, cfg, _ = annotate.parse_settings(argv)
    assert command == "estimate" and cfg.fraction == 0.5 and cfg.image_detail == "high"
    assert cfg.model == "toy-expert" and cfg.run_dir == str(tmp_path)  # from the profile; --run-dir wins
    assert annotate.main(argv) == 0
    assert len(splits.read_split_ids(tmp_path)["stage1"]) > 0
    assert annotate.main([*argv, "--set", "no_such_key=1"]) == 1
    assert "error: --set 'no_such_key=1': section '01_annotation': unknown key 'no_such_key'" in capsys.readouterr().err


def test_offline_expert_runs_without_a_server_of_ones_own(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert annotate.main(cli_args("run", data_dir, run_dir, "--offline-expert", "--limit", 3)) == 0
    assert len(successes(run_dir)) == 3


# ----------------------------------------------------------------------------- Batch API


def test_batch_files_and_ingest(data_dir, stage1, tmp_path):
    cfg = config(data_dir, tmp_path)
    paths = batch_api.write_batch_files(cfg, max_bytes=40_000)
    assert len(paths) > 1 and paths[0].parent == RunLayout(tmp_path).batch_inputs  # split by size
    lines = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    assert [line["custom_id"].split("::")[0] for line in lines] == stage1
    assert all(line["url"] == "/v1/chat/completions" and line["method"] == "POST" for line in lines)
    assert len(lines[0]["body"]["messages"][0]["content"]) == 3

    # a Batch API output file: answers from the offline expert, one failed request
    with ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), mistake_rate=0.0)) as server:
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
    assert batch_api.ingest_batch_results(cfg, results) == {"ok": len(lines) - 1, "error": 1}
    assert batch_api.ingest_batch_results(cfg, results) == {"skipped": len(lines) - 1, "error": 1}
    rows = records(tmp_path)
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == len(lines) - 1 and all(r["mode"] == "batch" for r in rows)
    prices = cost.Prices.from_settings(cfg)
    online = sum(prices.cost(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) for r in ok)
    assert cost.tally(ok, prices)["usd"] == pytest.approx(online / 2)
    # only the failed request is still pending
    assert len(batch_api.write_batch_files(cfg)) == 1
    results.write_text("not json\n")
    with pytest.raises(ValueError, match="out.jsonl:1"):
        batch_api.ingest_batch_results(cfg, results)


# ----------------------------------------------------------------------------- notebook


def test_notebook_never_leaks_the_api_key(data_dir, tmp_path):
    """Run notebook 01 with a sentinel key in the environment; the key appears nowhere."""
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


def test_a_401_that_echoes_the_key_leaves_it_nowhere_in_the_run(data_dir, tmp_path, monkeypatch, capsys):
    """The chain runs notebook 01 against a server that quotes the key in its 401 (as some do);
    the key appears in no file of the run directory and not on the console."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from morelib.run import ChainError, run_chain

    sentinel = "sk-ECHOED-4b1d8e2f"
    monkeypatch.setenv("OPENAI_API_KEY", sentinel)
    seen = []

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            seen.append(key)
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.", "code": "invalid_api_key"}})
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Echo", key)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run_dir = tmp_path / "run"
    shutil.copytree(data_dir, run_dir / "data")
    try:
        with pytest.raises(ChainError) as info:
            run_chain("toy", run_dir, only=["01_annotation"], overrides=[
                "01_annotation.offline_expert=false", f"01_annotation.base_url=http://127.0.0.1:{server.server_port}/v1",
                "01_annotation.max_retries=0"])
    finally:
        server.shutdown()
    assert seen and set(seen) == {sentinel}  # the server did see the key, and quoted it back
    assert "HTTP 401" in str(info.value) and sentinel not in str(info.value)
    executed = run_dir / "notebooks" / "01_annotation.ipynb"
    assert "HTTP 401" in executed.read_text()  # the failure is in the executed copy ...
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and sentinel.encode() in p.read_bytes()]
    assert leaks == []  # ... and the key is in no file
    out = capsys.readouterr()
    assert sentinel not in out.out + out.err
