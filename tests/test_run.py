"""The chain runner on tiny fake notebooks: order, what it injects, failure, resume, figures."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from morelib.config import ConfigError
from morelib.files import read_json
from morelib.layout import RunLayout
from morelib.run import (
    INJECTED, KEPT_FIGURES, ChainError, chain_notebooks, check_notebooks, copy_figures, declared_parameters,
    kernel_for_this_interpreter, main, run_chain, select,
)
from nbtools import make_notebook

PARAMS = 'profile = "toy"\nrun_dir = None\noverrides = []\n'
# Each fake notebook records what the runner injected; the last one also builds its settings from
# it, as the real notebooks do (only one does: importing the settings takes seconds per kernel).
RECORD = (
    "import json, pathlib\n"
    "row = {{'stem': {stem!r}, 'injected': [profile, run_dir, overrides]}}\n"
    "if {builds!r}:\n"
    "    from morelib.config import load_settings\n"
    "    settings = load_settings('06_evaluation', profile, overrides, run_dir)\n"
    "    row.update(seed=settings.seed, n_boot=settings.n_boot, run_dir=settings.run_dir)\n"
    "with open(pathlib.Path(run_dir) / 'trace.jsonl', 'a') as f:\n"
    "    f.write(json.dumps(row) + '\\n')"
)


def fake_chain(tmp_path: Path, second_fails: bool = False) -> tuple[Path, Path]:
    """Three notebooks that append their stem and parameters to run_dir/trace.jsonl."""
    notebooks = tmp_path / "notebooks"
    for stem in ("00_first", "01_second", "02_third"):
        cells = [("md", f"# {stem}"), ("params", PARAMS), ("code", RECORD.format(stem=stem, builds=stem == "02_third"))]
        if stem == "01_second" and second_fails:
            cells.append(("code", "x = 1\nraise ValueError('broken on purpose')"))
        make_notebook(cells, notebooks / f"{stem}.ipynb")
    (notebooks / "helper.ipynb").write_text("{}")  # not numbered: not part of the chain
    profile = tmp_path / "fake.yaml"
    profile.write_text(yaml.safe_dump({
        "common": {"profile": "fake", "run_dir": str(tmp_path / "run"), "seed": 7},
        "06_evaluation": {"n_boot": 42},
    }))
    return notebooks, profile


def trace(tmp_path: Path) -> list[dict]:
    path = tmp_path / "run" / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_select_by_stem_number_and_only(tmp_path):
    notebooks = [tmp_path / f"{stem}.ipynb" for stem in ("00_a", "01_b", "02_c")]
    assert select(notebooks, "01_b") == notebooks[1:]
    assert select(notebooks, "02") == notebooks[2:]
    assert select(notebooks, only=["02_c", "00"]) == [notebooks[0], notebooks[2]]
    with pytest.raises(ChainError, match="no notebook '05_x'"):
        select(notebooks, "05_x")


def test_declared_parameters_and_the_injected_names(tmp_path):
    good = make_notebook([("md", "# x"), ("params", PARAMS + "extra: int = 3"), ("code", "pass")], tmp_path / "00_a.ipynb")
    assert declared_parameters(good) == ["profile", "run_dir", "overrides", "extra"]
    old_style = make_notebook([("params", 'profile = "toy"\nseed = 0'), ("code", "pass")], tmp_path / "01_b.ipynb")
    with pytest.raises(ChainError, match=r"01_b\.ipynb: parameters cell lacks run_dir, overrides"):
        check_notebooks([good, old_style])
    untagged = make_notebook([("code", "x = 1")], tmp_path / "02_c.ipynb")
    with pytest.raises(ChainError, match=r"02_c\.ipynb: no cell tagged 'parameters'"):
        declared_parameters(untagged)


def test_chain_runs_in_order_with_the_profile_injected(tmp_path, capfd):
    notebooks, profile = fake_chain(tmp_path)
    assert [p.stem for p in chain_notebooks(notebooks)] == ["00_first", "01_second", "02_third"]
    timings = run_chain(profile, notebooks_dir=notebooks, overrides=["06_evaluation.n_boot=5"])
    assert list(timings) == ["00_first", "01_second", "02_third"]
    run = RunLayout(tmp_path / "run")
    injected = [str(profile), str(run.root), ["06_evaluation.n_boot=5"]]
    assert trace(tmp_path) == [
        {"stem": "00_first", "injected": injected},
        {"stem": "01_second", "injected": injected},
        # The notebook's settings: common's seed, the override over the profile's n_boot.
        {"stem": "02_third", "injected": injected, "seed": 7, "n_boot": 5, "run_dir": str(run.root)},
    ]
    assert sorted(p.name for p in run.notebooks.iterdir()) == ["00_first.ipynb", "01_second.ipynb", "02_third.ipynb"]
    saved = read_json(run.timings)
    assert set(saved["notebooks"]) == set(timings) and all(v["status"] == "ok" for v in saved["notebooks"].values())
    info = read_json(run.run_info)
    assert info["config"]["06_evaluation"] == {"n_boot": 5} and info["seed"] == 7
    assert "01_second" in run.run_log.read_text()
    # The kernels talk over local sockets: no warning about unencrypted TCP on the console.
    assert "without encryption" not in capfd.readouterr().err


def test_chain_stops_at_failure_naming_notebook_and_cell_then_resumes(tmp_path):
    notebooks, profile = fake_chain(tmp_path, second_fails=True)
    with pytest.raises(ChainError) as error:
        run_chain(profile, notebooks_dir=notebooks)
    message = str(error.value)
    assert "01_second" in message and "ValueError: broken on purpose" in message
    # In [1] parameters, In [2] papermill's injected parameters, In [3] record, In [4] the failure
    assert "In [4]" in message and "'x = 1'" in message
    assert [row["stem"] for row in trace(tmp_path)] == ["00_first", "01_second"]  # 02 never ran
    assert read_json(RunLayout(tmp_path / "run").timings)["notebooks"]["01_second"]["status"] == "failed"

    # Fix the notebook, resume from it: 00 is not run again, 01 and 02 are.
    fixed, _ = fake_chain(tmp_path / "fixed")
    (notebooks / "01_second.ipynb").write_text((fixed / "01_second.ipynb").read_text())
    assert list(run_chain(profile, notebooks_dir=notebooks, start="01_second")) == ["01_second", "02_third"]
    assert [row["stem"] for row in trace(tmp_path)] == ["00_first", "01_second", "01_second", "02_third"]
    statuses = read_json(RunLayout(tmp_path / "run").timings)["notebooks"]
    assert {stem: v["status"] for stem, v in statuses.items()} == {"00_first": "ok", "01_second": "ok", "02_third": "ok"}


@pytest.mark.parametrize("override, message", [
    ("06_evaluation.epochs=2", r"--set '06_evaluation\.epochs=2': section '06_evaluation': unknown key 'epochs'"),
    ("03_sft.target=labels", r"--set '03_sft\.target=labels': section '03_sft': target"),
])
def test_a_bad_setting_fails_before_anything_runs(tmp_path, override, message):
    notebooks, profile = fake_chain(tmp_path)
    with pytest.raises(ConfigError, match=message):
        run_chain(profile, notebooks_dir=notebooks, overrides=[override])
    assert trace(tmp_path) == []
    assert not (tmp_path / "run" / "notebooks").exists()


def test_a_notebook_that_cannot_take_the_profile_fails_before_anything_runs(tmp_path):
    notebooks, profile = fake_chain(tmp_path)
    make_notebook([("params", 'profile = "toy"\nseed = 0'), ("code", "pass")], notebooks / "03_old.ipynb")
    with pytest.raises(ChainError, match=r"03_old\.ipynb: parameters cell lacks run_dir, overrides"):
        run_chain(profile, notebooks_dir=notebooks)
    assert trace(tmp_path) == []


def test_private_kernel_points_at_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    with kernel_for_this_interpreter("no-such-kernel-for-tests") as name:
        spec = KernelSpecManager().get_kernel_spec(name)
        assert spec.argv[0] == sys.executable


def test_copy_figures_copies_only_the_kept_files(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    figures = RunLayout(run_dir).figures
    figures.mkdir(parents=True)
    for name in ("table1.md", "figure3.png", "scratch.png"):
        (figures / name).write_text(name)
    dest = tmp_path / "repo_figures"
    copied = copy_figures(run_dir, dest)
    assert sorted(p.name for p in copied) == ["figure3.png", "table1.md"]
    assert sorted(p.name for p in dest.iterdir()) == ["figure3.png", "table1.md"]
    assert (dest / "table1.md").read_text() == "table1.md"
    assert set(KEPT_FIGURES) >= {"table1.md", "figure3.png", "figure4.png"}

    # The command line: --only none copies without running a notebook (into the repository's figures/).
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"common": {"profile": "p", "run_dir": str(run_dir)}}))
    monkeypatch.setattr("morelib.run.repo_root", lambda: tmp_path / "repo")
    assert main(["--profile", str(profile), "--only", "none", "--copy-figures"]) == 0
    assert sorted(p.name for p in (tmp_path / "repo" / "figures").iterdir()) == ["figure3.png", "table1.md"]
    assert "copied 2 files" in capsys.readouterr().out


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    _, profile = fake_chain(tmp_path)
    assert main(["--profile", str(profile), "--check", "--set", "00_prepare.nope=1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --set '00_prepare.nope=1': section '00_prepare': unknown key 'nope'")
    assert "Traceback" not in err and err.count("\n") == 1


def test_shipped_notebooks_take_the_profile():
    notebooks = chain_notebooks()
    assert [p.stem for p in notebooks][:1] == ["00_prepare"]
    check_notebooks(notebooks)
    for path in notebooks:
        assert declared_parameters(path) == list(INJECTED), path.name


def exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return exit_.code


@pytest.mark.parametrize("argv, code, message", [
    (["--from", "03_sft", "--only", "04_difficulty"], 2, "use either --from or --only"),
    (["--no-such-option"], 2, "unrecognized arguments: --no-such-option"),
    (["--profile", "no-such-profile", "--check"], 1, "profile 'no-such-profile': no file"),
])
def test_cli_errors_are_one_line(argv, code, message, capsys):
    assert exit_code(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_debug_shows_the_traceback_and_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    _, profile = fake_chain(tmp_path)
    assert main(["--profile", str(profile), "--check", "--debug", "--set", "00_prepare.nope=1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: --set '00_prepare.nope=1'")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("morelib.run.run_chain", interrupted)
    assert main(["--profile", str(profile)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and err.count("\n") == 1


def test_the_makefile_kernel_is_this_checkouts_and_beats_a_stale_user_kernel(tmp_path):
    """Run the Makefile's own kernel-install line in a fresh virtual environment, with a stale
    user-level ``morelib`` kernel (another clone's, from an older set-up) in the user's Jupyter
    directory: Jupyter, and so JupyterLab and the chain runner, pick the environment's kernel."""
    import re
    import subprocess
    import venv

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    (line,) = [line.strip() for line in makefile.splitlines() if "ipykernel install" in line]
    assert "--user" not in line and "--sys-prefix" in line
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    user_dir = tmp_path / "user-jupyter"
    stale = user_dir / "kernels" / "morelib"
    stale.mkdir(parents=True)
    (stale / "kernel.json").write_text(json.dumps({
        "argv": ["/elsewhere/.venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (morelib)", "language": "python"}))
    site = [p for p in sys.path if p.endswith("site-packages")]  # this environment's jupyter and ipykernel
    repo = str(Path(__file__).resolve().parent.parent)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    environ.update(JUPYTER_DATA_DIR=str(user_dir), PYTHONPATH=os.pathsep.join([repo, *site]))
    install = re.sub(r"^\$\(PY\)", str(python), line).replace("$(CURDIR)", repo)
    subprocess.run(install, shell=True, check=True, env=environ, capture_output=True)
    chosen = subprocess.run([str(python), "-c", (
        "import sys\n"
        "from jupyter_client.kernelspec import KernelSpecManager\n"
        "from morelib.run import kernel_for_this_interpreter\n"
        "spec = KernelSpecManager().get_kernel_spec('morelib')\n"
        "with kernel_for_this_interpreter() as name:\n"
        "    print(spec.argv[0], spec.resource_dir, name, sep='\\n')\n")],
        env=environ, capture_output=True, text=True, check=True).stdout.split("\n")
    assert chosen[0] == str(python)  # the environment's own interpreter, not /elsewhere
    assert Path(chosen[1]).is_relative_to(env_dir)
    assert chosen[2] == "morelib"  # the chain runner takes it as is
