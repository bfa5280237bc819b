import json
from pathlib import Path

import pytest
import yaml

from morelib.config import (
    ConfigError,
    declared_parameters,
    load_profile,
    notebook_parameters,
    parse_override,
    repo_root,
    resolve_run_dir,
    seed_everything,
    validate_profile,
    write_run_info,
)
from nbtools import make_notebook


def write_profile(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def notebook(tmp_path):
    return make_notebook(
        [("md", "# demo"), ("params", 'profile = "toy"\nrun_dir = "runs/toy"\nseed = 0\nepochs: int = 3\nname = "a" + "b"'),
         ("code", "print(epochs)")],
        tmp_path / "nb" / "03_demo.ipynb",
    )


def test_declared_parameters_reads_the_tagged_cell(notebook):
    declared = declared_parameters(notebook)
    assert declared == {"profile": "toy", "run_dir": "runs/toy", "seed": 0, "epochs": 3, "name": '"a" + "b"'}


def test_notebook_without_parameters_cell_is_an_error(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ConfigError, match="01_x.ipynb: no cell tagged 'parameters'"):
        declared_parameters(path)


def test_profile_resolves_run_dir_placeholders_and_overrides(tmp_path):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": "runs/p", "seed": 0, "data_dir": "{run_dir}/data", "unused": 1},
        "03_demo": {"epochs": 5},
    })
    profile = load_profile(path, overrides=["03_demo.epochs=7", "seed=3", "03_demo.name=[1, x]"])
    assert profile.run_dir == repo_root() / "runs" / "p"
    assert profile.common["data_dir"] == str(repo_root() / "runs" / "p" / "data")
    assert profile.common["seed"] == 3
    assert profile.sections["03_demo"] == {"epochs": 7, "name": [1, "x"]}
    moved = load_profile(path, run_dir=tmp_path / "elsewhere")
    assert moved.common["data_dir"] == str(tmp_path / "elsewhere" / "data")


def test_notebook_parameters_injects_only_declared_common_keys(tmp_path, notebook):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": "runs/p", "seed": 4, "data_dir": "x"},
        "03_demo": {"epochs": 9},
    })
    values = notebook_parameters(load_profile(path), notebook)
    assert values == {"profile": "p", "run_dir": str(repo_root() / "runs" / "p"), "seed": 4, "epochs": 9}


def test_unknown_parameter_names_key_notebook_and_profile(tmp_path, notebook):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": "runs/p", "seed": 0},
        "03_demo": {"epochs": 1, "learning_rate": 0.1},
    })
    with pytest.raises(ConfigError) as error:
        notebook_parameters(load_profile(path), notebook)
    message = str(error.value)
    assert "'learning_rate'" in message and "03_demo.ipynb" in message and str(path) in message
    assert "'epochs'" not in message.split("declare")[0]


def test_section_without_notebook_is_an_error(tmp_path, notebook):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": "runs/p", "seed": 0}, "09_missing": {"x": 1}})
    with pytest.raises(ConfigError, match="'09_missing' name no notebook"):
        validate_profile(load_profile(path), [notebook])


@pytest.mark.parametrize("text", ["novalue", "=3"])
def test_bad_override_is_an_error(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_missing_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles: .*toy"):
        load_profile("no_such_profile")


def test_shipped_profiles_fit_the_shipped_notebooks():
    notebooks = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for name in ("toy", "paper"):
        profile = load_profile(name)
        validate_profile(profile, notebooks)
        assert profile.common["profile"] == name


def test_paper_profile_carries_section_4_1():
    """paper.yaml sets every value of the paper's section 4.1 under the notebooks' own names."""
    sections = load_profile("paper").sections
    assert load_profile("paper").common["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    expected = {
        "01_annotation": {"model": "gpt-4o", "base_url": "https://api.openai.com/v1", "fraction": 0.25},
        "03_sft": {"epochs": 20, "per_device_batch_size": 8, "num_processes": 8, "learning_rate": 1.0e-4,
                   "gradient_accumulation_steps": 2, "warmup_ratio": 0.05, "max_length": 2096, "bf16": True},
        "05_grpo": {"epochs": 4, "per_device_batch_size": 16, "num_processes": 8, "learning_rate": 1.0e-6,
                    "gradient_accumulation_steps": 1, "warmup_ratio": 0.05, "temperature": 0.8,
                    "max_completion_length": 1024, "beta": 0.001, "epsilon": 0.2, "num_iterations": 2,
                    "num_generations": 8, "loss_type": "grpo", "gamma": 0.5, "length_threshold": 1024,
                    "bf16": True, "use_vllm": True},
        "04_difficulty": {"backend": "vllm"},
        "06_evaluation": {"backend": "vllm"},
    }
    for section, values in expected.items():
        for key, value in values.items():
            assert sections[section][key] == value, f"paper.yaml {section}.{key}"


def test_resolve_run_dir_is_relative_to_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_run_dir("runs/x") == repo_root() / "runs" / "x"
    assert resolve_run_dir(tmp_path) == tmp_path


def test_seed_everything_repeats_draws():
    import random

    import numpy
    import torch

    seed_everything(5)
    first = (random.random(), numpy.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), numpy.random.rand(), torch.rand(1).item()) == first


def test_write_run_info_records_versions_seed_and_hardware(tmp_path):
    path = write_profile(tmp_path / "p.yaml", {"common": {"profile": "p", "run_dir": str(tmp_path / "run"), "seed": 11}})
    profile = load_profile(path)
    info = json.loads(write_run_info(profile.run_dir, profile).read_text())
    assert info["seed"] == 11
    assert info["config"]["common"]["run_dir"] == str(tmp_path / "run")
    assert set(info["versions"]) >= {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "openai"}
    assert info["versions"]["torch"]
    assert info["hardware"]["cpu_count"] >= 1 and "gpus" in info["hardware"]
    assert "commit" in info["git"]


def test_toy_profile_equals_the_notebooks_own_defaults():
    """A notebook run alone (JupyterLab) must behave as the toy chain does: same values."""
    from morelib.config import declared_parameters, load_profile, notebook_parameters
    from morelib.run import chain_notebooks

    profile = load_profile("toy")
    for path in chain_notebooks():
        injected = notebook_parameters(profile, path)
        defaults = declared_parameters(path)
        for key, value in injected.items():
            if key in ("run_dir", "data_dir", "base_model"):
                continue  # resolved to absolute paths by the profile
            assert defaults[key] == value, f"{path.stem}.{key}: notebook {defaults[key]!r} != toy.yaml {value!r}"
