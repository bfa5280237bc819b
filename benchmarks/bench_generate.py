"""Generation throughput of the tiny model on CPU at several batch sizes (transformers backend).

    .venv/bin/python benchmarks/bench_generate.py --model runs/toy/models/base --data runs/toy/data

Tokens/s counts generated tokens up to each sequence's end token (padding after it is not
counted); the prompt holds the two images and the student prompt, as in every stage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="tiny model directory (built from --data into a temp dir if absent)")
    parser.add_argument("--data", type=Path, required=True, help="MORE-layout data directory (toy)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-sizes", default="1,4,16,32")
    parser.add_argument("--n-samples", type=int, default=32, help="samples generated at each batch size")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CI machine shares 2 cores)")
    args = parser.parse_args()

    import torch

    from morelib.data import load_split
    from morelib.inference import GenerationSettings, TransformersBackend, batches
    from morelib.model import load_model
    from morelib.tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    model_dir = args.model
    if model_dir is None or not (model_dir / "config.json").is_file():
        model_dir = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", args.data)
    model, processor = load_model(model_dir, dtype="float32", device="cpu")
    backend = TransformersBackend(model.eval(), processor)
    samples = load_split(args.data, args.split)[: args.n_samples]

    # Warm-up: first calls pay for lazy initialisation.
    backend.generate(samples[:2], GenerationSettings(max_new_tokens=4))

    print(f"model {model_dir}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(samples)} samples, max_new_tokens {args.max_new_tokens}, torch threads {args.threads}")
    print(f"{'batch':>5} {'seconds':>8} {'new tokens':>10} {'tokens/s':>9} {'samples/s':>9} {'prompt tok':>10}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        start, new_tokens, prompt_tokens = time.perf_counter(), 0, 0
        for batch in batches(samples, batch_size):
            for generation in backend.generate(batch, settings):
                new_tokens += generation.completion_tokens
                prompt_tokens += generation.prompt_tokens
        seconds = time.perf_counter() - start
        print(f"{batch_size:>5} {seconds:>8.2f} {new_tokens:>10} {new_tokens / seconds:>9.0f} "
              f"{len(samples) / seconds:>9.2f} {prompt_tokens / len(samples):>10.0f}")


if __name__ == "__main__":
    main()
