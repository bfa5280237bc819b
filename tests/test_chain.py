"""The real chain on the toy profile, through papermill (``pytest -m chain`` selects it).

It grows as notebooks arrive: every ``notebooks/NN_*.ipynb`` runs. ``CHAIN_OVERRIDES`` keeps
the test quick by shrinking sizes; the notebooks' logic is the same as in ``make reproduce``.
"""

import json

import nbformat
import pytest

from morelib import data, metrics
from morelib.config import repo_root
from morelib.run import INJECTED, chain_notebooks, declared_parameters, run_chain
from nbtools import figure_cells, figures_not_rendered

# Smaller than the toy profile so the whole chain stays quick in CI; owners of later notebooks
# add their own size overrides here.
CHAIN_OVERRIDES = [
    "00_prepare.toy_train=600",
    "00_prepare.toy_valid=150",
    "00_prepare.toy_test=200",
    "00_prepare.n_show=2",
    "00_prepare.tiny_model={}",  # TinySettings' smallest defaults
    "00_prepare.pretrain={epochs: 1, facts: 150, probe_facts: 8}",  # the pretraining path, in seconds
    # Later stages: fewer epochs/steps and one GRPO variant (owners: adjust to your notebooks).
    "03_sft.num_train_epochs=2",
    "03_sft.per_device_train_batch_size=4",  # twice the updates of the profile's batch 8: the pool needs right answers
    "03_sft.label_baselines=false",  # the label target is tested in test_sft; here it would double 03's time
    "03_sft.blank_images_ablation=false",
    "inference.max_new_tokens=128",  # a 2-epoch Stage 1 rambles: cap it, the plumbing is the same
    "05_grpo.variants=[progressive]",
    "05_grpo.max_steps=2",
    "05_grpo.max_completion_length=128",  # the same cap as inference's: sampling is most of a GRPO step
    "05_grpo.extra_seeds=[1]",  # a second training seed: 06 puts it in Figure 3 and figure3_seeds.csv
    "06_evaluation.models=[zero_shot, stage1, grpo_progressive]",
    "06_evaluation.limit=60",
    "06_evaluation.n_boot=50",
]


def test_every_notebook_takes_the_profile_and_nothing_else():
    notebooks = chain_notebooks()
    assert notebooks and notebooks[0].stem == "00_prepare"
    for path in notebooks:
        # A hyperparameter lives in morelib/settings.py and the profiles, never in a notebook.
        assert declared_parameters(path) == list(INJECTED), path


def repository_files() -> dict[str, bytes]:
    """Every file under figures/, notebooks/ and configs/, by path, with its bytes."""
    return {str(p): p.read_bytes() for d in ("figures", "notebooks", "configs")
            for p in sorted((repo_root() / d).rglob("*")) if p.is_file() and ".ipynb_checkpoints" not in p.parts}


def test_figure_cells_are_found_in_every_notebook_that_draws():
    """The chain test's figure check looks at the cells it should: each notebook that draws a
    figure has at least one cell ``figure_cells`` finds."""
    found = {path.stem: len(figure_cells(nbformat.read(path, as_version=4))) for path in chain_notebooks()}
    for stem in ("00_prepare", "03_sft", "05_grpo", "06_evaluation", "07_case_studies"):
        assert found[stem] >= 1, (stem, found)
    # ... and it fails a figure shown as text, as notebooks 03 and 05 used to show theirs.
    as_text = nbformat.v4.new_output("execute_result", data={"text/plain": "<Figure size 640x360 with 1 Axes>"})
    as_image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Image>"})
    cell = nbformat.v4.new_code_cell("display(report.show_figure(figure))")
    notebook = nbformat.v4.new_notebook(cells=[cell])
    cell.outputs = [as_text]
    assert len(figures_not_rendered(notebook)) == 2
    cell.outputs = [as_image]
    assert figures_not_rendered(notebook) == []
    # plt.show() in the inline backend: the PNG with the figure's text form beside it renders.
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x360 with 8 Axes>"})]
    assert figures_not_rendered(notebook) == []


@pytest.mark.chain
def test_toy_chain_runs_end_to_end(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    before = repository_files()
    # The pretrained base is cached outside the run: here in the test's own folder, never in ~/.cache.
    timings = run_chain("toy", run_dir=run_dir,
                        overrides=CHAIN_OVERRIDES + [f"00_prepare.pretrain_cache={tmp_path / 'bases'}"])
    stems = [path.stem for path in chain_notebooks()]
    assert list(timings) == stems
    for stem in stems:
        executed = nbformat.read(run_dir / "notebooks" / f"{stem}.ipynb", as_version=4)
        errors = [out for cell in executed.cells if cell.cell_type == "code"
                  for out in cell.get("outputs", []) if out.output_type == "error"]
        assert not errors, f"{stem}: {errors}"
        # Every figure renders: a cell that shows one carries a PNG, and no output is a Figure's text form.
        assert not figures_not_rendered(executed), f"{stem}: {figures_not_rendered(executed)}"

    # 00_prepare: the toy data validates and the tiny model is saved in the Hugging Face layout.
    report = data.validate(run_dir / "data")
    assert report.ok, data.format_report(report)
    assert all(len([n for n in s.label_counts.values() if n]) == 21 for s in report.splits.values())
    assert (run_dir / "models" / "base" / "config.json").is_file()
    assert len(list((tmp_path / "bases").glob("base-*/pretrain.json"))) == 1  # built once, into the cache
    assert (run_dir / "figures" / "00_label_distribution.png").is_file()

    # 01/02: the 25% and the pool split the training set; the SFT rows are filtered, gold answers.
    from morelib.answer import is_well_formed, parse_label

    train_ids = {s.id for s in data.load_split(run_dir / "data", "train")}
    split = json.loads((run_dir / "annotation" / "split_ids.json").read_text())
    assert set(split["stage1"]).isdisjoint(split["stage2_pool"])
    assert set(split["stage1"]) | set(split["stage2_pool"]) == train_ids
    rows = [json.loads(line) for line in (run_dir / "sft" / "stage1.jsonl").read_text().splitlines()]
    assert 0 < len(rows) <= len(split["stage1"])
    assert all(is_well_formed(r["completion"]) and parse_label(r["completion"]) == r["label"] for r in rows)

    # 03: Stage 1 trained (the loss fell) and was saved for the later stages.
    log = [json.loads(line) for line in (run_dir / "checkpoints" / "stage1" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]

    # 04: every pool sample is easy or hard.
    parts = [json.loads(line) for line in (run_dir / "difficulty" / "split.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in parts) == sorted(split["stage2_pool"])
    assert {r["difficulty"] for r in parts} <= {"easy", "hard"}

    # 05: GRPO logged its steps and saved MORE-R1.
    steps = [json.loads(line) for line in (run_dir / "grpo" / "progressive" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2]
    assert (run_dir / "checkpoints" / "grpo_progressive" / "model.safetensors").is_file()
    again = [json.loads(line) for line in (run_dir / "grpo" / "progressive_seed1" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2] and again != steps
    assert all((run_dir / "figures" / f"05_grpo_{name}.png").is_file() for name in ("rewards", "signal"))

    # 06: Table 1 holds the paper's rows and this run's, never mixed; its Stage 1 row is the
    # metric recomputed from the cached predictions.
    import pandas as pd

    from morelib.metrics import score

    table = pd.read_csv(run_dir / "figures" / "table1.csv")
    assert set(table["source"]) == {"reported (paper)", "toy run"}
    assert len(table[table["source"] == "reported (paper)"]) == 13
    # The toy rows sit in a block of their own, after every paper row, and say so in their names.
    toy_rows = table[table["source"] == "toy run"]
    assert toy_rows.index.min() > table[table["source"] == "reported (paper)"].index.max()
    assert toy_rows["group"].nunique() == 1 and all(toy_rows["model"].str.endswith("[toy run]"))
    preds = [json.loads(line) for line in (run_dir / "predictions" / "stage1__test.jsonl").read_text().splitlines()]
    by_id = {p["id"]: p for p in preds}
    test_ids = [s.id for s in data.load_split(run_dir / "data", "test")][:60]
    expected = score([by_id[i]["gold"] for i in test_ids], [by_id[i]["label"] for i in test_ids])
    ours = table[(table["source"] == "toy run") & (table["model"] == "MORE-R1 (Stage 1) [toy run]")].iloc[0]
    assert abs(ours["F1"] - 100 * expected["f1"]) < 0.01
    for name in ("figure3", "figure4"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 10_000
    paired = pd.read_csv(run_dir / "figures" / "paired_f1.csv")
    assert list(paired.columns) == ["model", "delta_f1", "ci_low", "ci_high"]
    assert (paired["ci_low"] <= paired["delta_f1"]).all() and (paired["delta_f1"] <= paired["ci_high"]).all()
    assert {"grpo_progressive", "grpo_progressive_seed1"} <= set(paired["model"])
    # Figure 3: the mean over both seeds against Stage 1, paired intervals over image-text pairs.
    gains = pd.read_csv(run_dir / "figures" / "figure3_gains.csv").set_index(["variant", "metric"])
    f1_gain = gains.loc[("progressive", "f1")]
    assert f1_gain["seeds"] == 2 and f1_gain["gain_low"] <= f1_gain["gain"] <= f1_gain["gain_high"]
    assert f1_gain["baseline"] == pytest.approx(ours["F1"], abs=0.01)
    seeds = pd.read_csv(run_dir / "figures" / "figure3_seeds.csv").set_index("variant")
    assert list(seeds.index) == ["progressive"] and seeds.loc["progressive", "seeds"] == 2
    more_r1 = table[table["model"] == "MORE-R1 [toy run]"].iloc[0]["F1"]
    assert seeds.loc["progressive", "f1_run0"] == pytest.approx(more_r1, abs=0.01)

    # The Stage 2 settings experiment (benchmarks/stage2_valid.py) on the finished run: it writes
    # its own directory and result, and leaves the run's Stage 2 files as they were. The benchmarks
    # run in this process (their main() with the command line's arguments): a child process of
    # each would import torch and transformers again.
    monkeypatch.syspath_prepend(str(repo_root() / "benchmarks"))
    import self_training_valid
    import stage2_valid

    run_log = (run_dir / "grpo" / "progressive" / "log.jsonl").read_bytes()
    def benchmark_args(name: str, *args: str, changes: tuple[str, ...]) -> list[str]:
        """A benchmark's command line on this run: the chain's overrides, then ``changes``."""
        sets = [arg for item in CHAIN_OVERRIDES + list(changes) for arg in ("--set", item)]
        return ["--profile", "toy", "--run-dir", str(run_dir), "--name", name, *args, *sets]

    command = benchmark_args("tiny", "--limit", "12", "--pool", "3",
                             changes=("05_grpo.learning_rate=1e-5", "05_grpo.max_steps=2"))
    capsys.readouterr()
    assert stage2_valid.main(command) == 0
    printed = capsys.readouterr().out
    result = json.loads((run_dir / "experiments" / "tiny" / "result.json").read_text())
    assert result["valid_facts"] == 12 and result["steps"] == 2
    assert result["ci95"][0] <= result["gain"] <= result["ci95"][1]
    assert result["fixed"] + result["broken"] <= result["changed_predictions"]
    # What GRPO did on the facts it trained on: a seeded sample of the pool, scored greedily.
    pool = result["pool"]
    on_pool = [json.loads(line) for line in (run_dir / "experiments" / "tiny" / "predictions" /
                                             "grpo_progressive__pool_sample.jsonl").open()]
    assert pool["hard"] + pool["easy"] == len(on_pool) and pool["hard"] <= 3 and pool["easy"] <= 3
    assert pool["hard_right"] + pool["easy_right"] == sum(r["label"] == r["gold"] for r in on_pool)
    for model in ("stage1", "tuned"):  # how sure each model is of its labels, over the outputs that have one
        certainty = result[f"label_entropy_{model}"]  # (a 2-epoch model capped at 128 tokens may give none)
        assert 0 <= certainty["outputs"] <= 12
        assert certainty["outputs"] == 0 or (certainty["first_token"] >= 0 and 0 <= certainty["unsure_share"] <= 1)
    assert json.loads(printed.strip().splitlines()[-1]) == result
    assert (run_dir / "grpo" / "progressive" / "log.jsonl").read_bytes() == run_log
    assert (run_dir / "experiments" / "tiny" / "checkpoints" / "grpo_progressive" / "done.json").is_file()
    # Several seeds of a setting scored as one model (benchmarks/stage2_seeds_valid.py): the mean of
    # one experiment twice is that experiment.
    import stage2_seeds_valid

    assert stage2_seeds_valid.main(["--profile", "toy", "--run-dir", str(run_dir), "tiny", "tiny"]) == 0
    seeds = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert seeds["valid_facts"] == 12 and seeds["stage1_f1"] == result["stage1_f1"]
    assert seeds["mean_f1"] == result["tuned_f1"] and seeds["gain"] == pytest.approx(result["gain"], abs=0.01)
    assert seeds["ci95"][0] <= seeds["gain"] <= seeds["ci95"][1]
    assert list(seeds["seed_gains"]) == ["tiny"] and seeds["seed_gains"]["tiny"] == pytest.approx(seeds["gain"], abs=0.01)
    assert stage2_seeds_valid.main(["--profile", "toy", "--run-dir", str(run_dir), "tiny", "nosuch"]) == 1
    assert "nosuch/predictions/grpo_progressive__valid.jsonl: no valid predictions" in capsys.readouterr().err
    # The chosen setting's held-out check (benchmarks/stage2_test.py): its seeds on test, against the
    # run's own Stage 1 test predictions; an experiment not yet scored on valid is refused.
    import stage2_test

    chain_sets = [arg for item in CHAIN_OVERRIDES for arg in ("--set", item)]
    test_args = ["--profile", "toy", "--run-dir", str(run_dir), "--limit", "12", *chain_sets]
    # A seed among the profile's extra_seeds names its model grpo_progressive_seed1.
    assert stage2_valid.main(benchmark_args("tiny-s1", "--limit", "12", "--pool", "0", changes=(
        "05_grpo.learning_rate=1e-5", "05_grpo.max_steps=2", "05_grpo.seed=1"))) == 0
    assert (run_dir / "experiments" / "tiny-s1" / "checkpoints" / "grpo_progressive_seed1" / "done.json").is_file()
    capsys.readouterr()
    assert stage2_test.main([*test_args, "tiny", "tiny-s1"]) == 0
    held_out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(held_out["seed_ci95"]) == ["tiny", "tiny-s1"]
    stage1_test = {r["id"]: r["label"] for r in map(json.loads, (run_dir / "predictions" / "stage1__test.jsonl").open())}
    tuned_test = [json.loads(line) for line in (run_dir / "experiments" / "tiny" / "predictions" /
                                                "grpo_progressive__test.jsonl").open()]
    assert held_out["test_facts"] == len(tuned_test) == 12 and {r["id"] for r in tuned_test} <= set(stage1_test)
    gold = [r["gold"] for r in tuned_test]
    expected = 100 * metrics.score(gold, [stage1_test[r["id"]] for r in tuned_test])["f1"]
    assert held_out["stage1_f1"] == pytest.approx(expected, abs=0.01)
    low, high = held_out["seed_ci95"]["tiny"]
    assert low <= held_out["seed_gains"]["tiny"] <= high and held_out["ci95"][0] <= held_out["gain"] <= held_out["ci95"][1]
    (run_dir / "experiments" / "unfinished").mkdir()
    assert stage2_test.main([*test_args, "unfinished"]) == 1
    assert "unfinished/result.json: experiment 'unfinished' has not finished on valid" in capsys.readouterr().err
    # The self-training yardstick (benchmarks/self_training_valid.py): SFT from Stage 1 on its own
    # right answers on the pool. It trains only on right answers and shares Stage 1's valid scores.
    # --hard-limit: one sample for each of the first 150 hard facts (about a third of this pool).
    command = benchmark_args("own", "--rows", "own", "--samples", "1", "--hard-limit", "150", "--limit", "12",
                             changes=("03_sft.max_steps=2",))
    assert self_training_valid.main(command) == 0
    own = json.loads((run_dir / "experiments" / "own" / "result.json").read_text())
    assert own["steps"] == 2 and own["stage1_f1"] == result["stage1_f1"]
    rows = [json.loads(line) for line in (run_dir / "experiments" / "own" / "sft" / "stage1.jsonl").open()]
    assert len(rows) == own["training_rows"] > 0
    assert all(parse_label(r["completion"]) == r["label"] for r in rows)
    assert {r["id"] for r in rows} <= set(split["stage2_pool"])
    room = own["room_for_rl"]  # pass@1 against pass@G on the pool, from the one sample per hard fact
    sampled = [json.loads(line) for line in (run_dir / "experiments" / "own" / "predictions" /
                                             "stage1__pool_hard_x1.jsonl").open()]
    hard_facts = sum(r["difficulty"] == "hard" for r in parts)
    assert room["hard_facts"] == len(sampled) == min(150, hard_facts) and room["hard_right_in_samples"] == sum(
        r["label"] == r["gold"] for r in sampled)
    assert room["pool_pass1"] <= room["pool_passG"] <= 1
    # --rows expert-hard: the same right answers on easy facts, the expert's reasoning on every hard one.
    command = benchmark_args("expert", "--rows", "expert-hard", "--limit", "12", changes=("03_sft.max_steps=2",))
    assert self_training_valid.main(command) == 0
    expert = [json.loads(line) for line in (run_dir / "experiments" / "expert" / "sft" / "stage1.jsonl").open()]
    difficulty = {r["id"]: r["difficulty"] for r in map(json.loads, (run_dir / "difficulty" / "split.jsonl").open())}
    easy_rows = [r for r in expert if difficulty[r["id"]] == "easy"]
    assert easy_rows == [r for r in rows if difficulty[r["id"]] == "easy"]
    assert sorted(r["id"] for r in expert if difficulty[r["id"]] == "hard") == sorted(
        i for i, d in difficulty.items() if d == "hard")
    assert all(is_well_formed(r["completion"]) and parse_label(r["completion"]) == r["label"] for r in expert)
    assert (run_dir / "grpo" / "progressive" / "log.jsonl").read_bytes() == run_log
    from morelib.training_logs import stage2_experiments

    assert set(stage2_experiments(run_dir / "experiments").index) == {"tiny", "tiny-s1", "own", "expert"}  # not "unfinished"
    # Another base, scored on valid (benchmarks/base_valid.py): notebooks 00-02 into a run directory of
    # its own with a changed corpus, then Stage 1 and the 25% label-only model on that base.
    import base_valid

    other = tmp_path / "other_base"
    sets = [arg for item in [*CHAIN_OVERRIDES, "00_prepare.pretrain={epochs: 1, facts: 160, probe_facts: 8}",
                             "03_sft.max_steps=2"] for arg in ("--set", item)]
    capsys.readouterr()
    assert base_valid.main(["--profile", "toy", "--run-dir", str(other), "--limit", "12", *sets]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["base"] != json.loads((run_dir / "models" / "base" / "pretrain.json").read_text())["key"]
    assert scored["valid_facts"] == 12 and "more_task" in scored["probe"]
    for name in ("stage1", "sft_label_25"):
        predicted = [json.loads(line) for line in (other / "predictions" / f"{name}__valid.jsonl").open()]
        assert scored[name]["unparsed"] == sum(r["label"] is None for r in predicted) <= 12
        f1 = 100 * metrics.score([r["gold"] for r in predicted], [r["label"] for r in predicted])["f1"]
        assert scored[name]["f1"] == pytest.approx(f1, abs=0.05)

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["config"]["00_prepare"]["toy_train"] == 600
    assert not (repo_root() / "notebooks" / "runs").exists()  # nothing written beside the sources
    # A run never touches the repository's files (figures go to the run directory; `make figures` copies them).
    assert repository_files() == before
