"""Loading a profile: placeholders, overrides, the run directory, and what a run records."""

import json
import re
from pathlib import Path

import pytest
import yaml

from morelib.config import (
    ConfigError,
    load_profile,
    parse_override,
    repo_root,
    resolve_run_dir,
    seed_everything,
)
from morelib.provenance import write_run_info


def write_profile(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_profile_resolves_run_dir_placeholders_and_overrides(tmp_path):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": "runs/p", "seed": 0, "data_dir": "{run_dir}/data"},
        "05_grpo": {"mix_epochs": 5, "stage1_model": "{repo_root}/models/s1"},
    })
    profile = load_profile(path, overrides=["05_grpo.mix_epochs=7", "seed=3", "05_grpo.reward_names=[answer, format]"])
    assert profile.name == "p" and profile.path == path
    assert profile.run_dir == repo_root() / "runs" / "p"
    assert profile.common["data_dir"] == str(repo_root() / "runs" / "p" / "data")
    assert profile.common["seed"] == 3
    assert profile.sections["05_grpo"] == {"mix_epochs": 7, "stage1_model": f"{repo_root()}/models/s1",
                                           "reward_names": ["answer", "format"]}
    # --run-dir moves every {run_dir} with it.
    moved = load_profile(path, run_dir=tmp_path / "elsewhere")
    assert moved.common["data_dir"] == str(tmp_path / "elsewhere" / "data")
    assert moved.settings("05_grpo").data_dir == str(tmp_path / "elsewhere" / "data")


def test_values_are_common_then_the_sections_own(tmp_path):
    path = write_profile(tmp_path / "p.yaml", {
        "common": {"profile": "p", "run_dir": str(tmp_path / "run"), "seed": 4, "base_model": "m"},
        "06_evaluation": {"seed": 9, "n_boot": 10},
    })
    profile = load_profile(path)
    # 06 declares profile, seed and base_model; its own seed wins. 04_difficulty has none of them.
    assert profile.values("06_evaluation") == {"profile": "p", "run_dir": str(tmp_path / "run"), "seed": 9,
                                               "base_model": "m", "n_boot": 10}
    assert profile.values("04_difficulty") == {"run_dir": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match="no section '09_x'"):
        profile.values("09_x")


@pytest.mark.parametrize("text, expected", [
    ("05_grpo.gamma=0.25", ("05_grpo", "gamma", 0.25)),
    ("seed=1", (None, "seed", 1)),
    ("05_grpo.variants=[raw, balanced]", ("05_grpo", "variants", ["raw", "balanced"])),
    ("03_sft.deepspeed_config=null", ("03_sft", "deepspeed_config", None)),
    ("01_annotation.base_url=http://x:8000/v1", ("01_annotation", "base_url", "http://x:8000/v1")),
    ("trace_id=", (None, "trace_id", "")),
])
def test_overrides_are_yaml_values(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=3", "05_grpo.=1", "x=[unclosed"])
def test_bad_override_is_an_error_naming_it(text):
    with pytest.raises(ConfigError, match=r"--set"):
        parse_override(text)


def test_numbers_yaml_reads_as_strings_are_numbers(tmp_path):
    # YAML reads 1e-4 (no dot) as a string; the optimizer would fail on it far from the cause.
    settings = load_profile("toy", ["05_grpo.learning_rate=1e-4", "05_grpo.max_steps=12"],
                            run_dir=tmp_path).settings("05_grpo", variant="raw")
    assert settings.learning_rate == pytest.approx(1e-4) and isinstance(settings.learning_rate, float)
    profile = tmp_path / "p.yaml"
    profile.write_text("common: {profile: p, run_dir: x}\n03_sft: {learning_rate: 3e-5}\n")
    assert load_profile(profile, run_dir=tmp_path).settings("03_sft").learning_rate == pytest.approx(3e-5)


def test_a_word_for_a_number_names_the_set_and_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"--set '05_grpo.learning_rate=fast'.*learning_rate: must be a number"):
        load_profile("toy", ["05_grpo.learning_rate=fast"], run_dir=tmp_path).settings("05_grpo", variant="raw")


def test_missing_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles: .*toy"):
        load_profile("no_such_profile")


def test_broken_profile_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("common: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: not valid YAML: [^\n]+$"):
        load_profile(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected a mapping of sections"):
        load_profile(bad)
    bad.write_text("common: {profile: x}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: section 'common' lacks 'run_dir'"):
        load_profile(bad)
    bad.write_text("common: {profile: x, run_dir: r}\n05_grpo: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: section '05_grpo' must be a mapping"):
        load_profile(bad)


def test_paper_profile_carries_section_4_1():
    """paper.yaml sets every value of the paper's section 4.1, under the settings' (TRL's) names."""
    profile = load_profile("paper")
    assert profile.common["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    expected = {
        "01_annotation": {"model": "gpt-4o", "base_url": "https://api.openai.com/v1", "fraction": 0.25},
        "03_sft": {"num_train_epochs": 20, "per_device_train_batch_size": 8, "num_processes": 8,
                   "learning_rate": 1.0e-4, "gradient_accumulation_steps": 2, "warmup_steps": 0.05,
                   "max_length": 2096, "bf16": True},
        "05_grpo": {"mix_epochs": 4, "per_device_train_batch_size": 16, "num_processes": 8, "learning_rate": 1.0e-6,
                    "gradient_accumulation_steps": 1, "warmup_steps": 0.05, "temperature": 0.8,
                    "max_completion_length": 1024, "beta": 0.001, "epsilon": 0.2, "num_iterations": 2,
                    "num_generations": 8, "loss_type": "grpo", "gamma": 0.5, "length_threshold": 1024,
                    "bf16": True, "use_vllm": True},
        "inference": {"backend": "vllm", "temperature": 0.0},
    }
    for section, values in expected.items():
        for key, value in values.items():
            assert profile.sections[section][key] == value, f"paper.yaml {section}.{key}"


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
    profile = load_profile(path, overrides=["05_grpo.gamma=0.25"])
    info = json.loads(write_run_info(profile.run_dir, profile).read_text())
    assert info["seed"] == 11 and info["profile"] == "p" and info["profile_file"] == str(path)
    assert info["config"]["common"]["run_dir"] == str(tmp_path / "run")
    assert info["config"]["05_grpo"] == {"gamma": 0.25}
    assert set(info["versions"]) >= {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "openai"}
    assert info["versions"]["torch"]
    assert info["hardware"]["cpu_count"] >= 1 and "gpus" in info["hardware"]
    assert "commit" in info["git"]


# ----------------------------------------------------------------------------- extends


# What toy-full changes in toy (its file holds nothing else).
TOY_FULL_CHANGES = [
    "common.profile=toy-full", "common.run_dir=runs/toy-full", "00_prepare.toy_train=1500", "00_prepare.toy_test=2000",
    "03_sft.label_baselines=true", "03_sft.blank_images_ablation=true", "03_sft.side_by_side=1",
    "05_grpo.extra_seeds=[1, 2]", "05_grpo.max_hard_samples=null", "05_grpo.max_easy_samples=null",
    "05_grpo.num_generations=8", "05_grpo.per_device_train_batch_size=16", "05_grpo.temperature=1.0",
    "05_grpo.top_p=1.0", "05_grpo.top_k=0", "05_grpo.learning_rate=1.0e-05", "05_grpo.max_steps=450",
    "05_grpo.side_by_side=2",
    "06_evaluation.models=[zero_shot, sft_label_full, sft_label_25, stage1, grpo_progressive, grpo_raw, "
    "grpo_balanced, grpo_hard_only]",
    "07_case_studies.models=[sft_label_full, stage1, grpo_progressive]",
]


def test_toy_full_is_toy_with_only_its_changes():
    """toy-full extends toy: every section builds exactly as toy with toy-full's values set."""
    from morelib.settings import SECTIONS

    raw = yaml.safe_load((repo_root() / "configs" / "toy-full.yaml").read_text())
    assert raw.pop("extends") == "toy"
    assert sum(len(values) for values in raw.values()) == len(TOY_FULL_CHANGES)  # no copied value
    full, toy = load_profile("toy-full"), load_profile("toy", overrides=TOY_FULL_CHANGES)
    assert full.sections == toy.sections and full.name == "toy-full"
    for section in SECTIONS:
        assert full.settings(section) == toy.settings(section), section


def test_a_profile_extends_another_and_errors_name_the_file_that_holds_the_key(tmp_path):
    base = write_profile(tmp_path / "base.yaml", {
        "common": {"profile": "base", "run_dir": str(tmp_path / "run"), "seed": 4},
        "05_grpo": {"gamma": 0.5, "mix_epochs": 4, "variants": ["raw", "progressive"]},
    })
    child = write_profile(tmp_path / "child.yaml", {"extends": "base", "common": {"profile": "child"},
                                                    "05_grpo": {"gamma": 0.25, "variants": ["raw"]}})
    profile = load_profile(child)
    assert profile.name == "child" and profile.path == child and profile.common["seed"] == 4
    assert profile.sections["05_grpo"] == {"gamma": 0.25, "mix_epochs": 4, "variants": ["raw"]}  # lists replaced whole
    (tmp_path / "sub").mkdir()
    grandchild = write_profile(tmp_path / "sub" / "g.yaml", {"extends": "../child.yaml", "05_grpo": {"mix_epochs": 2}})
    assert load_profile(grandchild).sections["05_grpo"] == {"gamma": 0.25, "mix_epochs": 2, "variants": ["raw"]}

    # The unknown-key errors stay as they are, naming the file that holds the key.
    write_profile(child, {"extends": "base", "05_grpo": {"gama": 0.25}})
    with pytest.raises(ConfigError) as error:
        load_profile(child)
    assert str(error.value) == f"{child}: section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"
    write_profile(base, {"common": {"profile": "base", "run_dir": "runs/x"}, "05_grpo": {"gama": 0.25}})
    write_profile(child, {"extends": "base"})
    with pytest.raises(ConfigError) as error:
        load_profile(child)
    assert str(error.value) == f"{base}: section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"
    # A value the settings class refuses is blamed on the file it came from.
    write_profile(base, {"common": {"profile": "base", "run_dir": "runs/x"}, "05_grpo": {"variant": "mystery"}})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(base))}: section '05_grpo': variant: 'mystery'"):
        load_profile(child).settings("05_grpo")

    for bad, message in (({"extends": "nowhere"}, r"'extends: nowhere': no file .*nowhere\.yaml"),
                         ({"extends": ["base"]}, r"'extends' must name a profile, got \['base'\]"),
                         ({"extends": "child"}, r"'extends' makes a loop")):
        write_profile(child, bad)
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(child))}: {message}"):
            load_profile(child)



def test_run_info_keeps_the_record_of_every_notebook(tmp_path):
    path = write_profile(tmp_path / "p.yaml", {"common": {"profile": "p", "run_dir": str(tmp_path / "run"), "seed": 1}})
    first = load_profile(path)
    write_run_info(first.run_dir, first, notebooks=["00_prepare", "01_annotation"])
    again = load_profile(path, overrides=["seed=2"])
    info = json.loads(write_run_info(again.run_dir, again, notebooks=["01_annotation"], overrides=["seed=2"]).read_text())
    assert info["seed"] == 2 and sorted(info["notebooks"]) == ["00_prepare", "01_annotation"]
    assert info["notebooks"]["00_prepare"]["seed"] == 1 and info["notebooks"]["00_prepare"]["overrides"] == []
    assert info["notebooks"]["01_annotation"]["seed"] == 2 and info["notebooks"]["01_annotation"]["overrides"] == ["seed=2"]


def test_derived_values_are_set_on_the_loaded_profile_as_they_are():
    """``load_profile(..., derive=f)``: what ``f`` derives from the loaded profile is set without a
    round trip through ``--set`` text, and a key no section has is the same error as a ``--set``'s."""
    calls = []

    def lengths(profile):
        calls.append(profile.settings("05_grpo").vllm_max_model_length)
        return {"05_grpo.vllm_max_model_length": 1536, "inference.vllm_max_model_len": 2048}

    loaded = load_profile("toy", ["seed=3"], default_section="05_grpo", derive=lengths)
    assert calls == [None]  # derived from the profile as loaded, once
    assert loaded.settings("05_grpo").vllm_max_model_length == 1536
    assert loaded.settings("inference").vllm_max_model_len == 2048
    assert loaded.settings("common").seed == 3
    assert loaded.origin("05_grpo", "vllm_max_model_length").startswith("derived by ")
    with pytest.raises(ConfigError, match=r"section '05_grpo': unknown key 'vllm_max_model_lenght'"):
        load_profile("toy", derive=lambda profile: {"05_grpo.vllm_max_model_lenght": 1})


def test_a_notebook_that_trains_nothing_never_imports_trl(tmp_path):
    """Importing TRL takes about 4.5 s. A notebook's load checks another training section's keys when
    that section is built, with the same error; a load with no section (``morelib.run``) checks
    them all at once."""
    import subprocess
    import sys

    typo = write_profile(tmp_path / "typo.yaml", {"common": {"profile": "typo", "run_dir": str(tmp_path / "run")},
                                                  "05_grpo": {"gama": 0.25}})
    script = f"""
import sys
from morelib.config import ConfigError, load_profile
from morelib import preflight

for section in ("01_annotation", "02_filtering", "04_difficulty", "06_evaluation", "07_case_studies"):
    profile = load_profile("toy", ["03_sft.learning_rate=0.5"], default_section=section, derive=preflight.inference_lengths)
    profile.settings(section), profile.settings("inference"), profile.settings("common")
loaded = load_profile({str(typo)!r}, default_section="01_annotation")
loaded.settings("01_annotation")
deferred = load_profile("toy", ["05_grpo.gama=1"], default_section="01_annotation")
print("trl imported:", "trl" in sys.modules)
for profile in (loaded, deferred):
    try:
        profile.settings("05_grpo")
    except ConfigError as error:
        print(error)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    # The same errors as a check at load names, blaming the file or the --set.
    assert out.splitlines() == ["trl imported: False",
                                f"{typo}: section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)",
                                "--set '05_grpo.gama=1': section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"]
    with pytest.raises(ConfigError, match=re.escape(f"{typo}: section '05_grpo': unknown key 'gama'")):
        load_profile(typo)
