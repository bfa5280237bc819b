"""The settings classes and the profiles: every key is a documented field, both profiles build,
TRL's own options pass through, and a wrong key is named with where it came from."""

import dataclasses
import re

import pytest
import trl
import yaml

from morelib.config import ConfigError, build_settings, describe, load_profile, load_settings, with_changes
from morelib.launch import read_settings, write_settings
from morelib.layout import RunLayout, repo_root
from morelib.settings import DERIVED, SECTIONS, field_names, help_text
from morelib.training_settings import GRPOSettings, SFTSettings

PROFILES = tuple(sorted(p.stem for p in (repo_root() / "configs").glob("*.yaml")))  # toy, toy-full, paper


def raw_profile(name: str) -> dict:
    return yaml.safe_load((repo_root() / "configs" / f"{name}.yaml").read_text())


def minimal_profile(tmp_path, **sections) -> str:
    """A profile file with only what load_profile requires, plus ``sections``."""
    path = tmp_path / "minimal.yaml"
    path.write_text(yaml.safe_dump({"common": {"profile": "minimal", "run_dir": str(tmp_path / "run")}, **sections}))
    return str(path)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_key_is_a_field_of_its_section(name):
    raw = raw_profile(name)
    assert raw.pop("extends", "toy") in PROFILES  # a profile may extend another (toy-full extends toy)
    for section, values in raw.items():
        assert section in SECTIONS, f"{name}.yaml: section {section!r} has no settings class"
        fields = field_names(SECTIONS[section])
        for key in values or {}:
            assert key in fields, f"{name}.yaml: {section}.{key} is not a field of {SECTIONS[section].__name__}"
            assert key not in DERIVED.get(section, ()), f"{name}.yaml: {section}.{key} is derived by the code"


@pytest.mark.parametrize("name", PROFILES)
def test_every_section_of_both_profiles_builds(name):
    profile = load_profile(name)
    profile.validate()
    for section, cls in SECTIONS.items():
        assert type(profile.settings(section)) is cls


def test_paper_training_settings_are_trl_configs_with_the_papers_values():
    """The paper profile builds on any machine (bf16 included) and reaches TRL under TRL's names."""
    profile = load_profile("paper")
    sft = profile.settings("03_sft")
    assert isinstance(sft, trl.SFTConfig)
    assert (sft.num_train_epochs, sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (20, 8, 2)
    assert (sft.learning_rate, sft.warmup_steps, sft.max_length, sft.bf16) == (1e-4, 0.05, 2096, True)
    assert sft.base_model == "Qwen/Qwen2.5-VL-7B-Instruct" and sft.use_lora
    grpo = profile.settings("05_grpo")
    assert isinstance(grpo, trl.GRPOConfig)
    assert (grpo.loss_type, grpo.beta, grpo.epsilon, grpo.num_iterations) == ("grpo", 0.001, 0.2, 2)
    assert (grpo.temperature, grpo.max_completion_length, grpo.learning_rate) == (0.8, 1024, 1e-6)
    assert (grpo.mix_epochs, grpo.gamma, grpo.length_threshold, grpo.use_vllm, grpo.bf16) == (4, 0.5, 1024, True, True)
    # The mix epochs are one pass in order: TRL's own epoch count and shuffling are fixed.
    assert (grpo.num_train_epochs, grpo.shuffle_dataset, grpo.remove_unused_columns) == (1, False, False)


def test_common_values_reach_every_section_that_has_the_field():
    profile = load_profile("toy", overrides=["seed=5", "max_pixels=6272"])
    assert profile.settings("05_grpo").seed == 5  # TRL's own seed field
    assert profile.settings("06_evaluation").seed == 5
    assert profile.settings("03_sft").max_pixels == 6272
    assert profile.settings("inference").max_pixels == 6272
    assert profile.settings("03_sft").run_dir == str(profile.run_dir)


def test_unknown_key_in_a_profile_file_names_file_section_and_key(tmp_path):
    data = raw_profile("toy")
    data["05_grpo"]["gama"] = 0.25
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_profile(path)
    assert str(error.value) == f"{path}: section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"
    data = {"common": {"profile": "x", "run_dir": "runs/x"}, "05_grp": {}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown section '05_grp'"):
        load_profile(path)


def test_unknown_key_in_a_set_names_the_set_not_the_profile():
    with pytest.raises(ConfigError) as error:
        load_profile("toy", overrides=["05_grpo.gama=0.25"])
    assert str(error.value) == "--set '05_grpo.gama=0.25': section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"
    assert "toy.yaml" not in str(error.value)
    with pytest.raises(ConfigError, match=r"--set '05_grpx\.gamma=1': unknown section '05_grpx'"):
        load_profile("toy", overrides=["05_grpx.gamma=1"])


def test_a_bare_set_key_goes_to_common_or_the_notebooks_section():
    # Without a section of its own (morelib.run), a bare key is common's; the error points to the section that has it.
    with pytest.raises(ConfigError) as error:
        load_profile("toy", overrides=["gamma=0.25"])
    assert str(error.value) == "--set 'gamma=0.25': section 'common': unknown key 'gamma' (did you mean '05_grpo.gamma'?)"
    # A notebook passes its own section, where the bare key belongs.
    assert load_settings("05_grpo", "toy", ["gamma=0.25"]).gamma == 0.25
    with pytest.raises(ConfigError) as error:
        load_settings("05_grpo", "toy", ["gama=0.25"])
    assert str(error.value) == "--set 'gama=0.25': section '05_grpo': unknown key 'gama' (did you mean 'gamma'?)"


def test_a_refused_value_names_the_set_that_gave_it():
    with pytest.raises(ConfigError) as error:
        load_profile("toy", overrides=["03_sft.target=labels"]).settings("03_sft")
    assert str(error.value).startswith("--set '03_sft.target=labels': section '03_sft': target: 'labels'")


@pytest.mark.parametrize("override", ["03_sft.output_dir=/tmp/elsewhere", "05_grpo.num_train_epochs=3"])
def test_derived_keys_are_refused(override):
    refused = rf"--set '{re.escape(override)}': .* is derived by morelib.settings and cannot be set"
    with pytest.raises(ConfigError, match=refused):
        load_profile("toy", overrides=[override])
    with pytest.raises(ConfigError, match="cannot be set"):
        build_settings(override.split(".")[0], {"output_dir": "/tmp/elsewhere"})


def test_trl_options_missing_from_the_profile_can_be_set(tmp_path):
    profile = load_profile(minimal_profile(tmp_path), overrides=[
        "03_sft.report_to=tensorboard", "03_sft.max_grad_norm=0.5",
        "05_grpo.vllm_max_model_length=4096", "05_grpo.log_completions=true", "05_grpo.max_grad_norm=0.25",
    ])
    sft, grpo = profile.settings("03_sft"), profile.settings("05_grpo")
    assert sft.report_to == ["tensorboard"] and sft.max_grad_norm == 0.5
    assert grpo.vllm_max_model_length == 4096 and grpo.log_completions is True and grpo.max_grad_norm == 0.25
    # Untouched TRL options keep TRL's defaults.
    assert grpo.num_generations == trl.GRPOConfig.__dataclass_fields__["num_generations"].default


def test_output_dir_follows_the_run_directory_and_model(tmp_path):
    sft = load_settings("03_sft", "toy", run_dir=tmp_path / "run")
    assert sft.output_dir == str(RunLayout(tmp_path / "run").checkpoint("stage1") / "ckpt")
    baseline = with_changes(sft, model_name="sft_label_full", target="label")
    assert baseline.model_dir == RunLayout(tmp_path / "run").checkpoint("sft_label_full")
    assert baseline.output_dir == str(baseline.model_dir / "ckpt")
    grpo = load_settings("05_grpo", "toy", run_dir=tmp_path / "run", variant="raw")
    assert grpo.model_dir == RunLayout(tmp_path / "run").checkpoint("grpo_raw")
    assert grpo.work_dir == RunLayout(tmp_path / "run").grpo_dir("raw")
    assert grpo.output_dir == str(grpo.model_dir / "ckpt")


def test_with_changes_recomputes_trl_derived_fields():
    grpo = load_settings("05_grpo", "toy", ["per_device_train_batch_size=8", "gradient_accumulation_steps=1"])
    assert grpo.generation_batch_size == 8 and grpo.steps_per_generation == 1
    bigger = with_changes(grpo, per_device_train_batch_size=16, gradient_accumulation_steps=2)
    assert bigger.generation_batch_size == 32 and bigger.steps_per_generation == 2
    assert bigger == load_settings("05_grpo", "toy", ["per_device_train_batch_size=16", "gradient_accumulation_steps=2"])
    assert grpo.generation_batch_size == 8  # the original is untouched
    # Changes stack, and an unknown change is refused like an unknown key.
    assert with_changes(with_changes(bigger, variant="raw"), gamma=0.25).per_device_train_batch_size == 16
    with pytest.raises(ConfigError, match="unknown key 'gama'"):
        with_changes(grpo, gama=0.25)
    with pytest.raises(ConfigError, match="variant"):
        with_changes(grpo, variant="mixed")


def test_settings_round_trip_through_the_launch_file(tmp_path):
    profile = load_profile("toy", overrides=["05_grpo.reward_weights=[1.0, 0.5, 2.0]"], run_dir=tmp_path / "run")
    for section in SECTIONS:
        settings = profile.settings(section)
        back = read_settings(write_settings(settings, tmp_path / f"{section}.json"))
        assert type(back) is type(settings) and back == settings, section
    grpo = with_changes(profile.settings("05_grpo"), variant="hard_only")
    back = read_settings(write_settings(grpo, tmp_path / "grpo.json"))
    assert back.variant == "hard_only" and back.reward_weights == [1.0, 0.5, 2.0] and back == grpo


def test_a_bad_launch_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"section": "05_grpo", "values": {"gama": 0.5}}')
    with pytest.raises(ValueError, match=r"settings\.json: .*section '05_grpo': unknown key 'gama'"):
        read_settings(path)
    path.write_text('{"values": {}}')
    with pytest.raises(ValueError, match=r"settings\.json: expected an object with 'section' and 'values'"):
        read_settings(path)
    with pytest.raises(ValueError, match="was not built by morelib.config"):
        write_settings(dataclasses.replace(load_settings("04_difficulty", "toy")), tmp_path / "x.json")


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_field_has_help_text(section):
    cls = SECTIONS[section]
    undocumented = [name for name in sorted(field_names(cls)) if not help_text(cls, name).strip()]
    assert not undocumented, f"{cls.__name__} fields without help: {undocumented}"


def test_describe_shows_value_and_meaning():
    table = describe(load_settings("05_grpo", "toy"), ["gamma", "beta"])
    assert table.loc["gamma", "value"] == 0.5 and "Easy-share decay" in table.loc["gamma", "meaning"]
    assert table.loc["beta", "meaning"]  # TRL's own help text


def test_project_fields_are_declared_once():
    """Fields this project adds to TRL's configs do not shadow a TRL field of the same name."""
    for cls, base in ((SFTSettings, trl.SFTConfig), (GRPOSettings, trl.GRPOConfig)):
        own = {f.name for f in dataclasses.fields(cls)} - {f.name for f in dataclasses.fields(base)}
        assert {"run_dir", "use_lora", "lora_r", "distributed"} <= own
        shadowed = [f.name for f in dataclasses.fields(cls) if f.name in {g.name for g in dataclasses.fields(base)}
                    and cls.__dataclass_fields__[f.name].metadata is not base.__dataclass_fields__[f.name].metadata]
        assert not shadowed, f"{cls.__name__} redeclares TRL fields {shadowed}"


NOTEBOOKS = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.py"))


def settings_variables(tree) -> dict[str, str]:
    """Names a notebook binds to a section's settings: ``x = load_settings("05_grpo", ...)`` or
    ``x = config.settings("inference")`` -> ``{"x": "05_grpo"}``."""
    import ast

    bound = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args):
            continue
        func, first = node.value.func, node.value.args[0]
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if called in ("load_settings", "settings") and isinstance(first, ast.Constant) and first.value in SECTIONS:
            bound.update({target.id: first.value for target in node.targets if isinstance(target, ast.Name)})
    return bound


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_what_a_notebook_reads_from_its_settings_exists(path):
    """``settings.X`` in a notebook is a field (or property) of its section's class: a typo or a
    missing field fails here, not half-way through a chain run."""
    import ast

    tree = ast.parse(path.read_text())
    bound = settings_variables(tree)
    assert path.stem in bound.values(), f"{path.name} never builds its own section's settings"
    for name, section in bound.items():
        cls = SECTIONS[section]
        known = field_names(cls) | {attr for attr in dir(cls) if not attr.startswith("_")}
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == name}
        assert not used - known, f"{path.name}: {name} is {cls.__name__}, which has no {sorted(used - known)}"


def test_our_choices_on_trl_fields_are_marked_in_their_help():
    """A TRL field whose value is our choice says so in its help, beside TRL's own text."""
    from morelib.settings import TRL_CHOICES

    for cls_name, notes in TRL_CHOICES.items():
        cls = {c.__name__: c for c in SECTIONS.values()}[cls_name]
        for name in notes:
            assert name in field_names(cls), (cls_name, name)
            assert "inferred" in help_text(cls, name), (cls_name, name)
    text = help_text(GRPOSettings, "vllm_importance_sampling_correction")
    assert "Importance Sampling" in text and "This reproduction: off" in text  # TRL's help, then ours
    assert "inferred" in help_text(GRPOSettings, "answer_requires_format")
    assert "filter rejected" in help_text(SFTSettings, "ids_key")


@pytest.mark.parametrize("override, message", [
    ("03_sft.use_lora=maybe", "use_lora: must be true or false, got 'maybe'"),
    ("05_grpo.use_lora=1", "use_lora: must be true or false, got 1"),
    ("06_evaluation.models=stage1", "models: must be a list of strings, got 'stage1'"),
    ("07_case_studies.models=[stage1, 3]", "models: must be a list of strings"),
    ("inference.backend=vlm", "backend: 'vlm' is not one of transformers, vllm, openai (did you mean 'vllm'?)"),
    ("inference.dtype=fp17", "dtype: 'fp17' is not one of"),
    ("05_grpo.reward_names=[format, lenght, answer]", "reward_names: 'lenght' is not one of"),
    ("05_grpo.variants=[progresive]", "variants: 'progresive' is not one of"),
    ("06_evaluation.split=tset", "split: 'tset' is not one of train, valid, test (did you mean 'test'?)"),
    ("01_annotation.split=trian", "split: 'trian' is not one of"),
    ("06_evaluation.models=[stage1, stage_1]", "models: 'stage_1' is not one of"),
    ("03_sft.distributed=torchrn", "distributed: 'torchrn' is not one of"),
    ("03_sft.lr_scheduler_type=cosin", "lr_scheduler_type: cosin is not a valid SchedulerType"),  # TRL's own check
    ("03_sft.num_train_epochs=ten", "num_train_epochs: must be a number, got 'ten'"),
])
def test_check_catches_every_mistyped_value_naming_the_set(override, message):
    profile = load_profile("toy", [override])
    with pytest.raises(ConfigError) as info:
        profile.validate()  # what `morelib.run --check` does
    text = str(info.value)
    assert text.startswith(f"--set {override!r}: section {override.split('.')[0]!r}: ") and message in text
    assert "\n" not in text


def test_a_string_for_a_bool_in_a_profile_file_names_the_file(tmp_path):
    path = minimal_profile(tmp_path, **{"03_sft": {"use_lora": "false"}})
    with pytest.raises(ConfigError, match=re.escape(f"{path}: section '03_sft': use_lora: must be true or false, "
                                                    "got 'false'")):
        load_profile(path).settings("03_sft")


def test_model_keys_of_extra_seed_runs_are_accepted():
    settings = load_settings("06_evaluation", "toy", ["06_evaluation.models=[stage1, grpo_raw_seed2]"])
    assert settings.models == ["stage1", "grpo_raw_seed2"]


@pytest.mark.parametrize("override,key", [
    ("03_sft.attn_implementation=flash", "attn_implementation"),
    ("05_grpo.attn_implementation=fa2", "attn_implementation"),
    ("inference.attn_implementation=fast", "attn_implementation"),
    ("03_sft.train_sampling_strategy=by_length", "train_sampling_strategy"),
    ("05_grpo.vllm_max_num_batched_tokens=0", "vllm_max_num_batched_tokens"),
    ("03_sft.progress_lines=-1", "progress_lines"),
    ("05_grpo.side_by_side=2", "side_by_side"),  # the paper profile launches with accelerate on 8 GPUs
    ("03_sft.side_by_side=0", "side_by_side"),
])
def test_a_bad_speed_setting_is_one_error_naming_its_key(override, key):
    section = override.split(".")[0]
    with pytest.raises(ConfigError) as error:
        load_profile("paper", overrides=[override]).settings(section)
    assert str(error.value).startswith(f"--set '{override}': section '{section}': {key}: ")
    assert "\n" not in str(error.value)


def test_the_paper_profile_sets_the_speed_settings():
    profile = load_profile("paper")
    sft, grpo = profile.settings("03_sft"), profile.settings("05_grpo")
    assert sft.attn_implementation == grpo.attn_implementation == profile.settings("inference").attn_implementation == "auto"
    assert sft.train_sampling_strategy == "group_by_length" and sft.dataloader_num_workers == 4
    assert sft.progress_lines == grpo.progress_lines == 50
    assert grpo.vllm_max_num_batched_tokens is None  # derived by the pre-flight


def test_a_field_that_sections_share_is_declared_once():
    """run_dir, data_dir, seed, the pixel limits, the LoRA and launch fields live in one mixin each;
    every section that has them gets the same default. ``base_model`` is declared again only where
    it means something else (00_prepare writes the tiny model there)."""
    import ast
    import dataclasses

    from morelib import settings as settings_module
    from morelib.layout import repo_root

    trees = [ast.parse((repo_root() / "morelib" / name).read_text()) for name in ("settings.py", "training_settings.py")]
    declared: dict[str, list[str]] = {}
    for cls in (node for tree in trees for node in tree.body if isinstance(node, ast.ClassDef)):
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                declared.setdefault(item.target.id, []).append(cls.name)
    shared = ["run_dir", "data_dir", "seed", "min_pixels", "max_pixels", "use_lora", "lora_r", "lora_alpha",
              "lora_dropout", "lora_target_modules", "num_processes", "distributed", "deepspeed_config"]
    assert {name: len(declared[name]) for name in shared} == dict.fromkeys(shared, 1)
    assert sorted(declared["base_model"]) == ["BaseModelField", "PrepareSettings"]
    for name in shared:
        defaults = {repr(f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for cls in SECTIONS.values() for f in dataclasses.fields(cls) if f.name == name
                    and not (name == "seed" and cls in (SFTSettings, GRPOSettings))}  # TRL's own seed (42)
        assert len(defaults) == 1, (name, defaults)
    assert [name for name in ("LoraFields", "LaunchFields", "PixelFields", "RunFields")
            if not issubclass(GRPOSettings, getattr(settings_module, name))] == []


def test_the_launchers_are_listed_once():
    from morelib import launch
    from morelib.settings import LAUNCHERS

    assert not hasattr(launch, "DISTRIBUTED")
    assert launch.launch_command("morelib.sft", "s.json", distributed="none")[-2:] == ["--settings", "s.json"]
    with pytest.raises(ValueError, match=r"distributed='mpi': expected one of \('auto', 'none'"):
        launch.launch_command("morelib.sft", "s.json", distributed="mpi")
    assert LAUNCHERS == ("auto", "none", "multi_gpu", "torchrun")
