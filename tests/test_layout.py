"""The run directory is named in one place: no literal file or folder name of a run directory is
spelled outside ``morelib/layout.py`` (docs/architecture.md, "Files in the run directory")."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where notebooks, stages and benchmarks live; layout.py is the one place that names the files.
SCANNED = ("morelib/*.py", "notebooks/*.py", "benchmarks/*.py")
NOT_SCANNED = {
    "morelib/layout.py": "the run directory's names themselves",
    "morelib/pretrain.py": "the pretraining cache (~/.cache), not a run directory",
}
# A quoted name ending like a file (f-strings too), or a run-directory folder joined with "/".
FILE_NAME = re.compile(r"""["']([^"'\s]*\.(?:jsonl|json|csv|log|txt))["']""")
FOLDERS = ("ckpt", "checkpoints", "predictions", "experiments", "annotation", "difficulty", "grpo", "sft",
           "logs", "metrics", "figures", "models", "data", "notebooks")
FOLDER = re.compile(r"""/\s*["'](%s)["']""" % "|".join(FOLDERS))
# Names that are not files of a run directory; the reason says whose they are.
ALLOWED = {
    # the data release's layout (morelib.data) and the toy's extra file (morelib.toy), in data_dir
    "rel2id.json": "data", "caption_dict.json": "data", "toy_meta.jsonl": "data", "toy_config.json": "data", "{split}.txt": "data",
    "train.txt": "data", "test.txt": "data", "*.txt": "data",
    # Hugging Face model folders (transformers' own names) and the tiny model's record (morelib.tiny)
    "config.json": "model", "preprocessor_config.json": "model", "tokenizer_config.json": "model",
    "adapter_config.json": "model", "chat_template.json": "model", "tiny_settings.json": "model",
    "qwen2_5_vl_7b_config.json": "model",
    # the package's prompt templates (morelib/templates)
    "expert_prompt.txt": "package", "task_description.txt": "package", "label_task_description.txt": "package",
    # temporary or scratch files outside any run directory
    "request.json": "an inference child's request, in a temporary folder (morelib.inference)",
    "kernel.json": "the Jupyter kernel spec (morelib.run)",
    "batch_input_*.jsonl": "Batch API uploads, for people, in a folder the user may choose (morelib.annotate)",
    "batch_input_{len(paths):03d}.jsonl": "the same",
    "rehearsal.json": "benchmark scratch", "smoke.json": "benchmark scratch", "{name}.log": "benchmark scratch",
    "}.txt": "benchmark scratch (gpu_rehearsal's step profiles)",
}
# Folders that are not in a run directory, by file and line text: the repository's own folders, and
# benchmarks' scratch data (their own temporary root).
ALLOWED_FOLDERS = {
    ("morelib/run.py", 'repo_root() / "notebooks"'), ("morelib/run.py", "repo_root() / 'notebooks'"),
    ("morelib/run.py", 'repo_root() / "figures"'), ("morelib/run.py", "repo_root() / 'figures'"),
    ("benchmarks/gpu_rehearsal.py", 'REPO / "configs" / "models"'),
    ("benchmarks/gpu_rehearsal.py", 'toy.generate(root / "data"'), ("benchmarks/gpu_smoke.py", 'toy.generate(root / "data"'),
    ("benchmarks/bench_annotate.py", 'generate(Path(tmp) / "data"'), ("benchmarks/bench_grpo.py", 'toy.generate(root / "data"'),
    ("benchmarks/bench_sft.py", 'toy.generate(tmp / "data"'),
}


def literal_names(path: Path, shown: str) -> list[str]:
    """``file:line: name`` for each run-directory name spelled in ``path`` that is not allowed."""
    hits = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for name in FILE_NAME.findall(line):
            base = name.rsplit("/", 1)[-1]
            if not base.startswith(".") and base not in ALLOWED:
                hits.append(f"{shown}:{number}: {name}")
        for name in FOLDER.findall(line):
            if not any(shown == where and text in line for where, text in ALLOWED_FOLDERS):
                hits.append(f"{shown}:{number}: {name}/")
    return hits


def test_no_run_directory_name_outside_the_layout():
    files = sorted({p for pattern in SCANNED for p in ROOT.glob(pattern)})
    assert len(files) > 30  # the scan sees the package, the notebooks and the benchmarks
    hits = [hit for p in files if (shown := p.relative_to(ROOT).as_posix()) not in NOT_SCANNED
            for hit in literal_names(p, shown)]
    assert not hits, "ask morelib.layout (RunLayout, ModelFolder, GrpoRunFolder) instead:\n" + "\n".join(hits)


def test_the_scan_finds_a_spelled_name(tmp_path):
    source = tmp_path / "stage.py"
    source.write_text('x = 1\nmarker = model_dir / "done.json"\nckpt = run.root / "checkpoints" / name\n'
                      'meta = data_dir / "toy_meta.jsonl"\n')
    assert literal_names(source, "stage.py") == ["stage.py:2: done.json", "stage.py:3: checkpoints/"]


def test_a_stage_takes_the_notebooks_layout_or_a_path(tmp_path):
    """RunLayout(layout) is the layout itself, so a stage given the notebook's RunLayout finds the same files."""
    from morelib import trace
    from morelib.layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    assert RunLayout(layout) == layout and RunLayout(layout).trace == layout.trace
    written = trace.write(layout, trace.Trace("train-1", "train-2", "first"))
    assert written == layout.trace and trace.load(layout) == trace.load(tmp_path / "run")
