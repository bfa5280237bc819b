"""The chain runner on tiny fake notebooks: order, injected parameters, failure, resume."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from morelib.config import ConfigError
from morelib.run import ChainError, chain_notebooks, kernel_for_this_interpreter, main, run_chain, select
from nbtools import make_notebook

PARAMS = 'profile = "toy"\nrun_dir = "runs/toy"\nseed = 0\n'


def fake_chain(tmp_path: Path, second_fails: bool = False) -> tuple[Path, Path]:
    """Three notebooks that append their stem and parameters to run_dir/trace.jsonl."""
    notebooks = tmp_path / "notebooks"
    record = (
        "import json, pathlib\n"
        "with open(pathlib.Path(run_dir) / 'trace.jsonl', 'a') as f:\n"
        "    f.write(json.dumps({{'stem': {stem!r}, 'seed': seed, 'value': value}}) + '\\n')"
    )
    for stem in ("00_first", "01_second", "02_third"):
        cells = [("md", f"# {stem}"), ("params", PARAMS + "value = 1"), ("code", record.format(stem=stem))]
        if stem == "01_second" and second_fails:
            cells.append(("code", "x = 1\nraise ValueError('broken on purpose')"))
        make_notebook(cells, notebooks / f"{stem}.ipynb")
    (notebooks / "helper.ipynb").write_text("{}")  # not numbered: not part of the chain
    profile = tmp_path / "fake.yaml"
    profile.write_text(yaml.safe_dump({
        "common": {"profile": "fake", "run_dir": str(tmp_path / "run"), "seed": 7, "unused_common": 1},
        "01_second": {"value": 42},
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


def test_chain_runs_in_order_with_injected_parameters(tmp_path):
    notebooks, profile = fake_chain(tmp_path)
    assert [p.stem for p in chain_notebooks(notebooks)] == ["00_first", "01_second", "02_third"]
    timings = run_chain(profile, notebooks_dir=notebooks, overrides=["02_third.value=5"])
    assert list(timings) == ["00_first", "01_second", "02_third"]
    assert trace(tmp_path) == [
        {"stem": "00_first", "seed": 7, "value": 1},
        {"stem": "01_second", "seed": 7, "value": 42},
        {"stem": "02_third", "seed": 7, "value": 5},
    ]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "notebooks").iterdir()) == ["00_first.ipynb", "01_second.ipynb", "02_third.ipynb"]
    saved = json.loads((run / "timings.json").read_text())
    assert set(saved["notebooks"]) == set(timings) and all(v["status"] == "ok" for v in saved["notebooks"].values())
    info = json.loads((run / "run_info.json").read_text())
    assert info["config"]["02_third"] == {"value": 5} and info["seed"] == 7
    assert "01_second" in (run / "logs" / "run.log").read_text()


def test_chain_stops_at_failure_naming_notebook_and_cell_then_resumes(tmp_path):
    notebooks, profile = fake_chain(tmp_path, second_fails=True)
    with pytest.raises(ChainError) as error:
        run_chain(profile, notebooks_dir=notebooks)
    message = str(error.value)
    assert "01_second" in message and "ValueError: broken on purpose" in message
    # In [1] parameters, In [2] papermill's injected parameters, In [3] record, In [4] the failure
    assert "In [4]" in message and "'x = 1'" in message
    assert [row["stem"] for row in trace(tmp_path)] == ["00_first", "01_second"]  # 02 never ran
    assert json.loads((tmp_path / "run" / "timings.json").read_text())["notebooks"]["01_second"]["status"] == "failed"

    # Fix the notebook, resume from it: 00 is not run again, 01 and 02 are.
    fixed, _ = fake_chain(tmp_path / "fixed")
    (notebooks / "01_second.ipynb").write_text((fixed / "01_second.ipynb").read_text())
    assert list(run_chain(profile, notebooks_dir=notebooks, start="01_second")) == ["01_second", "02_third"]
    assert [row["stem"] for row in trace(tmp_path)] == ["00_first", "01_second", "01_second", "02_third"]
    statuses = json.loads((tmp_path / "run" / "timings.json").read_text())["notebooks"]
    assert {stem: v["status"] for stem, v in statuses.items()} == {"00_first": "ok", "01_second": "ok", "02_third": "ok"}


def test_unknown_parameter_fails_before_anything_runs(tmp_path):
    notebooks, profile = fake_chain(tmp_path)
    with pytest.raises(ConfigError, match="'epochs'.*02_third.ipynb"):
        run_chain(profile, notebooks_dir=notebooks, overrides=["02_third.epochs=2"])
    assert trace(tmp_path) == []
    assert not (tmp_path / "run" / "notebooks").exists()


def test_private_kernel_points_at_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    with kernel_for_this_interpreter("no-such-kernel-for-tests") as name:
        spec = KernelSpecManager().get_kernel_spec(name)
        assert spec.argv[0] == sys.executable


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    _, profile = fake_chain(tmp_path)
    assert main(["--profile", str(profile), "--check", "--set", "00_prepare.nope=1"]) == 1
    assert "error:" in capsys.readouterr().err
