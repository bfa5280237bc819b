"""Stage 1 annotation figures: client throughput against the offline expert, and the paper's cost.

1. Requests per second against the loopback expert with a fixed injected latency (default
   200 ms per reply) at concurrency 1 and 32: shows the client overlaps requests.
2. The cost estimate the paper profile prints for the real MORE training set: 15,486 facts,
   25% per relation (~3,870 requests), two images each (a typical 1024x683 news photo and a
   ~300x400 object crop), at GPT-4o prices, for high and low detail, online and Batch API.
3. With ``--dead-endpoint``: how long a run against a port where nothing listens takes to stop,
   with the settings' default ``dead_endpoint_timeout`` and ``max_retries``.

    OMP_NUM_THREADS=1 python benchmarks/bench_annotate.py [--latency 0.2] [--requests 320] [--dead-endpoint]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from morelib import annotate, cost, expert_requests  # noqa: E402
from morelib.expert_server import ExpertConfig, ExpertServer, Faults  # noqa: E402
from morelib.settings import AnnotationSettings  # noqa: E402

PAPER_TRAIN_FACTS = 15_486
PAPER_FULL_SIZE = (1024, 683)
PAPER_CROP_SIZE = (300, 400)
PAPER_HEADLINE = ("Boston Celtics forward Jayson Tatum drives past Miami Heat guard Tyler Herro during the "
                  "second half of Game 3 of the Eastern Conference finals in Miami")


def throughput(data_dir: Path, concurrency: int, n_requests: int, latency: float) -> float:
    with tempfile.TemporaryDirectory() as run_dir, \
            ExpertServer(ExpertConfig(str(data_dir / "toy_meta.jsonl"), faults=Faults(latency=latency))) as server:
        cfg = AnnotationSettings(data_dir=str(data_dir), run_dir=run_dir, base_url=server.base_url, model="toy-expert",
                                 image_detail="low", concurrency=concurrency, fraction=1.0, limit=n_requests,
                                 progress=False)
        t0 = time.perf_counter()
        report = annotate.annotate(cfg)
        seconds = time.perf_counter() - t0
    assert report.succeeded == n_requests, report.summary()
    return n_requests / seconds


def dead_endpoint(data_dir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = AnnotationSettings(data_dir=str(data_dir), run_dir=run_dir, base_url=url, model="toy-expert",
                                 image_detail="low")
        t0 = time.perf_counter()
        try:
            annotate.annotate(cfg)
            outcome = "finished (unexpected)"
        except annotate.AnnotationError as error:
            outcome = f"stopped: {error}"
    print(f"\ndead endpoint (dead_endpoint_timeout={cfg.dead_endpoint_timeout:g} s, max_retries={cfg.max_retries}): "
          f"{time.perf_counter() - t0:.1f} s, {outcome}")


def paper_estimate(expected_output_tokens: int) -> None:
    n = round(PAPER_TRAIN_FACTS * 0.25)
    sample = SimpleNamespace(text=PAPER_HEADLINE, entity="Miami Heat", label="/per/org/opposed_to")
    prompt = expert_requests.expert_prompt_text(sample)
    print(f"\npaper profile: {PAPER_TRAIN_FACTS:,} training facts x 25% = ~{n:,} requests; "
          f"expert prompt ~{len(prompt):,} characters (~{cost.text_tokens(prompt)} tokens), images "
          f"{PAPER_FULL_SIZE[0]}x{PAPER_FULL_SIZE[1]} + {PAPER_CROP_SIZE[0]}x{PAPER_CROP_SIZE[1]}, "
          f"{expected_output_tokens} output tokens each, GPT-4o $2.50 / $10 per 1M")
    for detail in ("high", "low"):
        tokens = cost.request_tokens(prompt, [PAPER_FULL_SIZE, PAPER_CROP_SIZE], detail)
        est = cost.estimate([tokens] * n, expected_output_tokens, cost.Prices())
        images = sum(cost.image_tokens(*size, detail) for size in (PAPER_FULL_SIZE, PAPER_CROP_SIZE))
        print(f"  detail={detail:<4}: {tokens} input tokens/request ({images} image): {est.summary()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="toy data; default: generate a small set")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=320, help="requests at concurrency 32 (x 1/10 at 1)")
    parser.add_argument("--expected-output-tokens", type=int, default=500)
    parser.add_argument("--dead-endpoint", action="store_true", help="also time a run against a dead endpoint")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "offline-expert-needs-no-key")

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else None
        if data_dir is None:
            from morelib.toy import ToyConfig, generate

            data_dir = generate(Path(tmp) / "data", ToyConfig(seed=0, train=max(400, args.requests + 50),
                                                              valid=10, test=10))
        print(f"offline expert, {args.latency * 1000:.0f} ms injected latency per reply")
        for concurrency, n in ((1, max(10, args.requests // 10)), (32, args.requests)):
            rate = throughput(data_dir, concurrency, n, args.latency)
            print(f"  concurrency {concurrency:>2}: {n} requests, {rate:6.1f} requests/s "
                  f"(ideal {concurrency / args.latency:.0f})")
        if args.dead_endpoint:
            dead_endpoint(data_dir)
    paper_estimate(args.expected_output_tokens)


if __name__ == "__main__":
    main()
