"""The chain: execute the numbered notebooks in order with papermill.

    python -m morelib.run --profile toy                 # the whole chain
    python -m morelib.run --profile toy --from 03_sft   # resume from a notebook
    python -m morelib.run --only 06_evaluation --set 06_evaluation.batch_size=8

Executed copies go to ``<run_dir>/notebooks/`` (never into git), the log to
``<run_dir>/logs/run.log``, per-notebook wall times to ``<run_dir>/timings.json``.
Every notebook's parameters are checked against the profile before anything runs, and the
chain stops at the first failing cell, naming the notebook and the cell.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from morelib import secrets
from morelib.config import ConfigError, Profile, load_profile, repo_root
from morelib.provenance import write_run_info
from morelib.layout import FAITHFULNESS, FIGURE3_GAINS, FIGURE3_SEEDS, PAIRED_F1, TABLE1_STEM, RunLayout

# What papermill injects into every notebook: the profile, the run directory and the --set
# overrides. Each notebook then builds its own settings from them (morelib.config.load_settings),
# so a hyperparameter is never copied into a notebook.
INJECTED = ("profile", "run_dir", "overrides")
# The figures a run writes that `--copy-figures` (make figures) copies into the repository's figures/.
KEPT_FIGURES = (*(f"{TABLE1_STEM}.{ext}" for ext in ("md", "csv", "tex")), PAIRED_F1, FAITHFULNESS, FIGURE3_SEEDS,
                FIGURE3_GAINS, "figure3.png", "figure3.pdf", "figure4.png", "figure4.pdf", "per_label_f1.png", "per_label_f1.pdf",
                "confusion_matrix.png", "confusion_matrix.pdf", "05_grpo_rewards.png", "05_grpo_rewards.pdf")

KERNEL_NAME = "morelib"
log = logging.getLogger("morelib.run")


class ChainError(RuntimeError):
    """A notebook of the chain failed; the message names the notebook and the cell."""


def chain_notebooks(notebooks_dir: Path | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``notebooks_dir`` (default: the repository's), in order."""
    notebooks_dir = notebooks_dir or repo_root() / "notebooks"
    return sorted(path for path in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def _match(notebooks: list[Path], name: str) -> int:
    """Index of the notebook named by its stem (``03_sft``), file name or number (``03``)."""
    name = Path(name).stem
    for index, path in enumerate(notebooks):
        if name in (path.stem, path.stem.split("_", 1)[0]):
            return index
    raise ChainError(f"no notebook {name!r} in the chain ({', '.join(p.stem for p in notebooks)})")


def select(notebooks: list[Path], start: str | None = None, only: Sequence[str] = ()) -> list[Path]:
    """The notebooks to execute: all, those from ``start`` on, or ``only`` the named ones."""
    if only:
        return [notebooks[i] for i in sorted({_match(notebooks, name) for name in only})]
    if start:
        return notebooks[_match(notebooks, start):]
    return notebooks


@contextmanager
def local_kernel_manager() -> Iterator[type | None]:
    """A kernel manager class that talks to its kernel over local sockets (IPC) in a private
    directory, or None where there are none (Windows: the default TCP manager).

    Over TCP, every kernel prints a warning that its traffic is not encrypted; a kernel the chain
    starts on this machine needs no network, so it uses files that only this user can reach.
    """
    if os.name == "nt":
        yield None
        return
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    with tempfile.TemporaryDirectory(prefix="morelib-ipc-") as sockets:
        class LocalKernelManager(AsyncKernelManager):
            @default("transport")
            def _transport_default(self):
                return "ipc"

            @default("ip")
            def _ip_default(self):
                return os.path.join(sockets, "kernel")

        yield LocalKernelManager


@contextmanager
def kernel_for_this_interpreter(preferred: str = KERNEL_NAME) -> Iterator[str]:
    """Yield a kernel name whose Python is the interpreter running the chain.

    The registered ``morelib`` kernel is used when it points at ``sys.executable``;
    otherwise (not registered, or registered for another environment) a private kernelspec
    for this interpreter is put on ``JUPYTER_PATH`` for the duration of the run.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(preferred)
        if spec.argv and os.path.abspath(spec.argv[0]) == os.path.abspath(sys.executable):
            yield preferred
            return
    except NoSuchKernel:
        pass
    private = f"{preferred}-chain"
    with tempfile.TemporaryDirectory(prefix="morelib-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / private
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({preferred}, {sys.executable})",
            "language": "python",
        }))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, old]))
        try:
            yield private
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def declared_parameters(notebook: Path) -> list[str]:
    """Names assigned in a notebook's ``parameters`` cell."""
    import ast

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ChainError(f"{notebook}: no cell tagged 'parameters'")
    names = []
    for node in ast.parse("\n".join(c.source for c in cells)).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_notebooks(notebooks: Sequence[Path]) -> None:
    """Every notebook takes the injected names, so the runner can hand it the profile."""
    for path in notebooks:
        missing = [name for name in INJECTED if name not in declared_parameters(path)]
        if missing:
            raise ChainError(f"{path}: parameters cell lacks {', '.join(missing)} (needs {', '.join(INJECTED)})")


def copy_figures(run_dir: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Copy a run's kept figures into the repository's ``figures/`` (an explicit step: a run never
    modifies tracked files by itself)."""
    import shutil

    source, dest = RunLayout(run_dir).figures, Path(dest) if dest else repo_root() / "figures"
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in KEPT_FIGURES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
            copied.append(dest / name)
    return copied


def _describe_failure(stem: str, output: Path, error: Exception) -> str:
    """A one-paragraph account of a failed cell from papermill's execution error."""
    exec_count = getattr(error, "exec_count", None)
    source = (getattr(error, "source", "") or "").strip().splitlines()
    first_line = source[0] if source else ""
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", str(error))
    return (
        f"notebook {stem} failed in cell In [{exec_count}] "
        f"(index {getattr(error, 'cell_index', '?')} in the executed copy, starting {first_line!r}): "
        f"{ename}: {evalue}\n  executed copy with the traceback: {output}"
    )


def _setup_logging(run_dir: Path) -> Path:
    log_path = RunLayout(run_dir).run_log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.addHandler(file_handler)
    log.addHandler(console)
    log.setLevel(logging.INFO)
    log.propagate = False
    # The notebooks' own output goes to the file only; the console shows the chain's progress.
    papermill_log = logging.getLogger("papermill")
    for handler in list(papermill_log.handlers):
        papermill_log.removeHandler(handler)
        handler.close()
    papermill_log.addHandler(file_handler)
    papermill_log.setLevel(logging.INFO)
    papermill_log.propagate = False
    return log_path


def _update_timings(run_dir: Path, profile: Profile, stem: str, seconds: float, status: str) -> None:
    """Merge one notebook's wall time into ``timings.json`` (a resumed run keeps the others)."""
    from morelib.files import read_json, write_json

    path = RunLayout(run_dir).timings
    timings = read_json(path) if path.is_file() else {}
    notebooks = timings.get("notebooks", {})
    notebooks[stem] = {"seconds": round(seconds, 2), "status": status}
    timings = {
        "profile": profile.name,
        "notebooks": dict(sorted(notebooks.items())),
        "total_seconds": round(sum(item["seconds"] for item in notebooks.values()), 2),
    }
    write_json(path, timings)


def run_chain(
    profile: str | Profile = "toy",
    run_dir: str | Path | None = None,
    start: str | None = None,
    only: Sequence[str] = (),
    overrides: Sequence[str] = (),
    notebooks_dir: Path | None = None,
    kernel_name: str | None = None,
) -> dict[str, float]:
    """Execute the chain; return ``{notebook stem: wall seconds}`` of the notebooks run.

    Raises :class:`ConfigError` before running anything when a profile key does not fit a
    notebook, and :class:`ChainError` at the first failing notebook.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(profile, Profile):
        profile = load_profile(profile, overrides=overrides, run_dir=run_dir)
    profile.validate()
    notebooks = chain_notebooks(notebooks_dir)
    if not notebooks:
        raise ChainError(f"no NN_*.ipynb notebooks in {notebooks_dir or repo_root() / 'notebooks'}")
    check_notebooks(notebooks)
    selected = select(notebooks, start, only)
    parameters = {"profile": str(profile.path), "run_dir": str(profile.run_dir), "overrides": list(overrides)}

    out_dir = RunLayout(profile.run_dir).notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    # The expert's key may be in a variable of any name: its value is hidden too.
    hidden = secrets.secret_values(names=[profile.values("01_annotation").get("api_key_env") or "OPENAI_API_KEY"])
    log_path = _setup_logging(profile.run_dir)
    for handler in log.handlers:  # the notebooks' output goes to the log too
        handler.addFilter(secrets.ScrubFilter(hidden))
    write_run_info(profile.run_dir, profile, notebooks=[p.stem for p in selected], overrides=overrides)
    log.info("profile %s (%s), run directory %s", profile.name, profile.path, profile.run_dir)
    log.info("notebooks: %s; log: %s", ", ".join(p.stem for p in selected), log_path)

    timings: dict[str, float] = {}
    with kernel_for_this_interpreter() as fallback_kernel, local_kernel_manager() as manager:
        kernel = kernel_name or fallback_kernel
        engine_options = {"kernel_manager_class": manager} if manager else {}
        for path in selected:
            output = out_dir / path.name
            log.info("[%s] running (kernel %s) ...", path.stem, kernel)
            started = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(path), str(output), parameters=parameters, kernel_name=kernel,
                    cwd=str(repo_root()), log_output=True, progress_bar=False, **engine_options,
                )
            except PapermillExecutionError as error:
                seconds = time.perf_counter() - started
                _update_timings(profile.run_dir, profile, path.stem, seconds, "failed")
                message = secrets.scrub(_describe_failure(path.stem, output, error), hidden)
                log.error("[%s] FAILED after %.1f s: %s", path.stem, seconds, message)
                raise ChainError(message) from None
            finally:  # a traceback or an output kept in the executed copy may quote a key
                secrets.scrub_file(output, hidden)
            seconds = time.perf_counter() - started
            timings[path.stem] = seconds
            _update_timings(profile.run_dir, profile, path.stem, seconds, "ok")
            log.info("[%s] done in %.1f s -> %s", path.stem, seconds, output)
    log.info("chain done: %s", ", ".join(f"{stem} {sec:.1f} s" for stem, sec in timings.items()))
    log.info("total %.1f s; timings in %s", sum(timings.values()), RunLayout(profile.run_dir).timings)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    from morelib import cli

    parser = cli.make_parser("python -m morelib.run", __doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy", help="profile name in configs/ or a YAML path (default: toy)")
    parser.add_argument("--run-dir", help="run directory (default: the profile's run_dir)")
    parser.add_argument("--from", dest="start", metavar="NOTEBOOK", help="resume from this notebook (e.g. 03_sft)")
    parser.add_argument("--only", action="append", default=[], metavar="NOTEBOOK",
                        help="run only this notebook (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[SECTION.]KEY=VALUE",
                        help="override a profile value, e.g. --set 05_grpo.gamma=0.25 or --set seed=1")
    parser.add_argument("--kernel", help="Jupyter kernel name (default: 'morelib' if it is this interpreter's)")
    parser.add_argument("--check", action="store_true", help="only validate the profile (build every section's settings)")
    parser.add_argument("--copy-figures", action="store_true",
                        help="after the run (or alone, with --only none), copy the run's figures into figures/")
    args = parser.parse_args(argv)
    if args.start and args.only:
        parser.error("use either --from or --only")
    cli.hide_secrets_in_logs()
    try:
        if args.check:
            profile = load_profile(args.profile, overrides=args.overrides, run_dir=args.run_dir)
            profile.validate()
            check_notebooks(chain_notebooks())
            print(f"profile {profile.name} ({profile.path}): every section builds; "
                  f"{len(chain_notebooks())} notebooks take it")
            return 0
        if args.only != ["none"]:
            run_chain(args.profile, args.run_dir, args.start, args.only, args.overrides, kernel_name=args.kernel)
        if args.copy_figures:
            run_dir = load_profile(args.profile, overrides=args.overrides, run_dir=args.run_dir).run_dir
            copied = copy_figures(run_dir)
            print(f"copied {len(copied)} files from {RunLayout(run_dir).figures} into {repo_root() / 'figures'}")
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to go on (finished work is kept)", file=sys.stderr)
        return 130
    except (ConfigError, ChainError, OSError) as error:
        if args.debug:
            return cli.fail(error, debug=True)
        # A chain failure is two lines: what failed, and where its traceback is.
        print(secrets.scrub(f"error: {error}"), file=sys.stderr)
        return 1
    except Exception as error:
        return cli.fail(error, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
