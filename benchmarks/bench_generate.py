"""Generation throughput of the tiny model on CPU at several batch sizes and attention kernels (transformers backend).

    .venv/bin/python benchmarks/bench_generate.py --model runs/toy/checkpoints/stage1 --data runs/toy/data \
        --threads 2 --n-samples 128 --max-new-tokens 256 --batch-sizes 32

Tokens/s counts generated tokens up to each sequence's end token (padding after it is not
counted); the prompt holds the two images and the student prompt, as in every stage. Each
kernel of ``--attn`` (default: transformers' ``sdpa`` and ours, ``sdpa_gqa``, see
``morelib.attention``) loads the model again. The last column says whether a row's texts are
those of the first row (greedy decoding should not depend on the kernel or the batch size).
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
    parser.add_argument("--attn", default="sdpa,sdpa_gqa", help="attention kernels to compare, comma-separated")
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
    samples = load_split(args.data, args.split)[: args.n_samples]
    print(f"model {model_dir}, {len(samples)} samples, max_new_tokens {args.max_new_tokens}, "
          f"torch threads {args.threads}")
    print(f"{'kernel':>8} {'batch':>5} {'seconds':>8} {'new tokens':>10} {'tokens/s':>9} {'samples/s':>9} "
          f"{'prompt tok':>10} {'same text':>9}")
    first_texts: list[str] | None = None
    for kernel in args.attn.split(","):
        model, processor = load_model(model_dir, dtype="float32", device="cpu", attn_implementation=kernel)
        backend = TransformersBackend(model.eval(), processor)
        backend.generate(samples[:2], GenerationSettings(max_new_tokens=4))  # warm-up: lazy initialisation
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
            start, new_tokens, prompt_tokens, texts = time.perf_counter(), 0, 0, []
            for batch in batches(samples, batch_size):
                for generation in backend.generate(batch, settings):
                    new_tokens += generation.completion_tokens
                    prompt_tokens += generation.prompt_tokens
                    texts.append(generation.text)
            seconds = time.perf_counter() - start
            first_texts = first_texts or texts
            same = "yes" if texts == first_texts else "NO"
            print(f"{kernel:>8} {batch_size:>5} {seconds:>8.2f} {new_tokens:>10} {new_tokens / seconds:>9.0f} "
                  f"{len(samples) / seconds:>9.2f} {prompt_tokens / len(samples):>10.0f} {same:>9}", flush=True)


if __name__ == "__main__":
    main()
