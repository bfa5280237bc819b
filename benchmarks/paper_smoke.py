"""Before the paper run: one SFT step, one GRPO step with colocated vLLM, and 8 vLLM answers, on one GPU.

    python benchmarks/paper_smoke.py [--profile paper] [--set KEY=VALUE ...] [--root /tmp/paper_smoke]

Each check runs the package's own code with the profile's settings, the real base model and the
real data at full image size (set ``data_dir``, and ``base_model`` to a local copy if the machine
has no hub access), cut down only in steps and rows:

* ``sft``: one Stage 1-style optimizer step (label targets, so no expert is needed) with the
  profile's SFT settings (LoRA, bf16, gradient checkpointing, attention kernel, length grouping),
  in this process, without DeepSpeed;
* ``grpo``: one GRPO step from the base model with ``use_vllm: true``, ``vllm_mode: colocate``
  and the profile's vLLM settings (memory share, lengths derived by the pre-flight, our engine
  settings and prompt check, ``morelib.rollouts``), on a small mix of the training split;
* ``inference``: 8 test samples through the vLLM backend with the profile's decoding settings.

Each check runs in a child process of its own (GPU memory is freed between them), writes its log
to ``ROOT/<check>.log`` and prints one line: ``PASS <check>: ...`` or ``FAIL <check>: <last line of
the error>``. The exit status is 0 when every check passed. On a machine without a GPU the
checks run on CPU (``sft`` passes on the toy profile; the vLLM checks fail for want of vLLM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKS = ("sft", "grpo", "inference")
RESULT = "result: "
# The vLLM checks run colocated vLLM whatever the profile says: that is what they check.
VLLM_ROLLOUTS = ["05_grpo.use_vllm=true", "05_grpo.vllm_mode=colocate"]


def _peak_gb() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    return f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB"


def local_model(name: str) -> str:
    """A local directory for ``name`` (GRPO's reference model and vLLM load it from a path)."""
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    return snapshot_download(name)


def check_sft(profile: str, overrides: list[str], run_dir: str) -> str:
    from morelib import sft
    from morelib.config import load_settings

    settings = load_settings("03_sft", profile, overrides, run_dir, model_name="smoke_sft", target="label",
                             prompt="label", ids_key=None, max_steps=1, num_processes=1, deepspeed_config=None,
                             save_strategy="no", report_to="none", logging_steps=1)
    trainer = sft.build_trainer(settings)
    started = time.time()
    trainer.train()
    loss = next((row["loss"] for row in trainer.state.log_history if "loss" in row), float("nan"))
    return f"1 step of {settings.per_device_train_batch_size} rows in {time.time() - started:.1f} s, loss {loss:.3f}, {_peak_gb()}"


def check_grpo(profile: str, overrides: list[str], run_dir: str) -> str:
    from morelib import grpo
    from morelib.config import load_profile, load_settings, with_changes
    from morelib.data import load_split
    from morelib.difficulty import write_split
    from morelib.layout import RunLayout
    from morelib.preflight import engine_lengths

    common = load_settings("common", profile, overrides, run_dir)
    train = load_split(common.data_dir, "train")[:64]
    write_split([{"id": s.id, "label": s.label, "pred": s.label if k % 2 else "none",
                  "difficulty": "easy" if k % 2 else "hard"} for k, s in enumerate(train)],
                RunLayout(run_dir).difficulty_split)
    config = load_profile(profile, [*overrides, *VLLM_ROLLOUTS], run_dir, default_section="05_grpo", derive=engine_lengths)
    settings = with_changes(config.settings("05_grpo"), stage1_model=local_model(common.base_model), max_steps=1,
                            num_processes=1, deepspeed_config=None, save_steps=1000, report_to="none",
                            max_hard_samples=16, max_easy_samples=16, variants=["progressive"], extra_seeds=[])
    trainer = grpo.build_trainer(settings, num_processes=1)
    started = time.time()
    trainer.train()
    generation = getattr(trainer, "vllm_generation", None)
    checked = f", {generation.checks} batch(es) of vLLM prompt ids checked" if generation is not None else ""
    return (f"1 step ({settings.per_device_train_batch_size} completions, vllm_max_model_length "
            f"{settings.vllm_max_model_length}, max_num_batched_tokens {settings.vllm_max_num_batched_tokens}) in "
            f"{time.time() - started:.1f} s{checked}, {_peak_gb()}")


def check_inference(profile: str, overrides: list[str], run_dir: str) -> str:
    from morelib.data import load_split
    from morelib.config import load_profile
    from morelib.inference import backend_for
    from morelib.preflight import engine_lengths

    config = load_profile(profile, [*overrides, "inference.backend=vllm"], run_dir, default_section="06_evaluation",
                          derive=engine_lengths)
    gen, common = config.settings("inference"), config.settings("common")
    samples = load_split(common.data_dir, "test")[:8]
    backend = backend_for(gen, local_model(common.base_model), backend="vllm", in_subprocess=False)
    started = time.time()
    answers = backend.generate(samples, gen)
    parsed = sum(answer.label is not None for answer in answers)
    return f"{len(answers)} answers in {time.time() - started:.1f} s ({parsed} parsed), {_peak_gb()}"


def run_check(name: str, profile: str, overrides: list[str], root: Path, timeout: float) -> tuple[bool, str]:
    """Run one check in a child process; ``(passed, its line)``."""
    log = root / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--check", name, "--profile", profile,
               "--root", str(root), *[arg for value in overrides for arg in ("--set", value)]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        with open(log, "w") as out:
            status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return False, f"no result within {timeout:.0f} s (log: {log})"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    result = next((line[len(RESULT):] for line in reversed(lines) if line.startswith(RESULT)), None)
    if status == 0 and result is not None:
        return True, result
    return False, f"{lines[-1] if lines else f'exit status {status}'} (log: {log})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[SECTION.]KEY=VALUE")
    parser.add_argument("--root", default="/tmp/paper_smoke", help="run directory of the checks and their logs")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks of {CHECKS}")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per check")
    parser.add_argument("--check", choices=CHECKS, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    run_dir = str(root / "run")

    if args.check:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        check = {"sft": check_sft, "grpo": check_grpo, "inference": check_inference}[args.check]
        print(RESULT + check(args.profile, args.overrides, run_dir), flush=True)
        return 0

    checks = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in checks if name not in CHECKS]
    if unknown:
        parser.error(f"--only: unknown check(s) {unknown}; expected some of {CHECKS}")
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in checks:
        passed, line = run_check(name, args.profile, args.overrides, root, args.timeout)
        results[name] = {"passed": passed, "line": line}
        print(f"{'PASS' if passed else 'FAIL'} {name}: {line}", flush=True)
    (root / "smoke.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
