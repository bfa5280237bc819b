"""Table 1, the figures and the case picker: content, not just existence."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbtools import figures_not_rendered
from PIL import Image

from morelib import cases, evaluation, report, run_models, training_logs
from morelib.data import Sample
from morelib.layout import RunLayout
from morelib.reported import GROUPS, TABLE1
from morelib.rewards import make_length_reward

A, B = "/per/org/member_of", "/per/per/partner"


def scores(acc, p, r, f1, n=10, unparsed=0):
    return {"acc": acc, "precision": p, "recall": r, "f1": f1, "n": n, "n_unparsed": unparsed}


def test_reported_rows_are_the_papers():
    rows = {r["model"]: r for r in TABLE1}
    assert len(rows) == 13
    assert (rows["MORE-R1"]["acc"], rows["MORE-R1"]["f1"]) == (84.91, 67.80)
    assert rows["REMOTE"]["group"] == GROUPS[0]
    # F1 is close to the harmonic mean of P and R in every row (MMIB's is 0.026 off in the
    # paper itself); a typo in copying the numbers would be far larger.
    for r in TABLE1:
        assert r["f1"] == pytest.approx(2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"]), abs=0.03), r["model"]


def test_table1_keeps_reported_and_run_rows_apart(tmp_path):
    run = report.run_rows({
        "stage1": scores(0.5, 0.25, 0.5, 1 / 3, unparsed=2),
        "grpo_progressive": scores(0.6, 0.5, 0.5, 0.5),
        "grpo_raw": scores(0.1, 0.1, 0.1, 0.1),  # a variant: Figure 3, not Table 1
        "zero_shot": scores(0.05, 0.0, 0.0, 0.0),
    })
    df = report.table1(run, "toy")
    assert len(df) == 13 + 3
    assert set(df["source"]) == {"reported (paper)", "toy run"}
    ours = df[df["source"] == "toy run"].set_index("model")
    assert ours.loc["MORE-R1 [toy run]", "F1"] == 50.0 and ours.loc["MORE-R1 (Stage 1) [toy run]", "F1"] == 33.33
    assert ours.loc["MORE-R1 (Stage 1) [toy run]", "unparsed"] == 2
    assert not any("variant" in name for name in df["model"])
    paper = df[df["source"] == "reported (paper)"].set_index("model")
    assert paper.loc["MORE-R1", "F1"] == 67.80
    # The paper's groups hold the paper's rows only, in the paper's order; this run's rows follow in a
    # block of their own, named for the run, in the order of the paper's groups.
    assert list(dict.fromkeys(df["group"])) == [*GROUPS, report.run_block_name("toy")]
    assert set(df[df["group"].isin(GROUPS)]["source"]) == {"reported (paper)"}
    assert list(ours.index) == ["zero-shot (base model) [toy run]", "MORE-R1 (Stage 1) [toy run]", "MORE-R1 [toy run]"]

    written = report.write_table1(df, [tmp_path / "a", tmp_path / "b"], profile="toy")
    assert sorted(p.name for p in written) == ["table1.csv", "table1.csv", "table1.md", "table1.md", "table1.tex", "table1.tex"]
    back = pd.read_csv(tmp_path / "a" / "table1.csv")
    assert list(back.columns) == report.TABLE1_COLUMNS
    assert back[["Acc", "P", "R", "F1"]].to_numpy().tolist() == df[["Acc", "P", "R", "F1"]].to_numpy().tolist()
    md = (tmp_path / "b" / "table1.md").read_text()
    assert "| MORE-R1 [toy run] | toy run | 60.00 | 50.00 | 50.00 | 50.00 | 10 | 0 |" in md
    assert "| MORE-R1 | reported (paper) | 84.91 | 65.88 | 69.83 | 67.80 | 3036 |  |" in md
    assert "this run's (toy run: a tiny model, pretrained on the toy world" in md
    tex = (tmp_path / "a" / "table1.tex").read_text()
    assert r"\begin{tabular}" in tex and r"Qwen2.5-VL-SFT(25\%)" in tex and tex.count(r"\midrule") == 4  # three paper groups and the run's block


def test_table1_rejects_an_unknown_group():
    with pytest.raises(ValueError, match="unknown group"):
        report.table1([{"model": "x", "group": "Other", **scores(0, 0, 0, 0)}], "toy")


def assert_png(path: Path, min_bytes=10_000, min_size=(400, 300)):
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
        assert len(img.convert("L").getcolors(1_000_000)) > 10  # more than a blank canvas
    assert path.stat().st_size > min_bytes


def prediction_rows(gold, labels, prefix="t"):
    return [{"id": f"{prefix}{i}", "gold": g, "label": p} for i, (g, p) in enumerate(zip(gold, labels))]


def variant_predictions(seeds=1):
    """Stage 1 and the four variants (``seeds`` runs each) on 40 facts in 10 image-text pairs."""
    import random

    rng = random.Random(0)
    gold = [rng.choice(["none", A, B]) for _ in range(40)]
    noisy = lambda keep: [g if rng.random() < keep else rng.choice(["none", A, B]) for g in gold]  # noqa: E731
    predictions = {"stage1": prediction_rows(gold, noisy(0.6))}
    runs = {}
    for i, (variant, key) in enumerate(report.VARIANT_KEYS.items()):
        runs[variant] = [key] + [f"{key}_seed{s}" for s in range(1, seeds)]
        for run in runs[variant]:
            predictions[run] = prediction_rows(gold, noisy(0.5 + i / 10))
    pairs = {f"t{i}": f"img{i // 4}" for i in range(40)}
    return predictions, runs, pairs


def test_variant_gains_are_paired_means_over_seeds_against_stage1():
    from morelib.metrics import score

    predictions, runs, pairs = variant_predictions(seeds=3)
    gains = report.variant_gains(predictions, runs, n_boot=200, clusters=pairs).set_index(["variant", "metric"])
    row = gains.loc[("progressive", "f1")]
    f1 = lambda key: 100 * score([r["gold"] for r in predictions[key]], [r["label"] for r in predictions[key]])["f1"]  # noqa: E731
    assert row["seeds"] == 3 and row["n"] == 40
    assert row["mean"] == pytest.approx(sum(f1(k) for k in runs["progressive"]) / 3)
    assert row["baseline"] == pytest.approx(f1("stage1"))
    assert row["gain"] == pytest.approx(row["mean"] - row["baseline"])
    assert (gains["gain_low"] <= gains["gain"]).all() and (gains["gain"] <= gains["gain_high"]).all()
    by_fact = report.variant_gains(predictions, runs, n_boot=200).set_index(["variant", "metric"])
    assert (by_fact["gain"] == gains["gain"]).all() and not (by_fact["gain_low"] == gains["gain_low"]).all()
    with pytest.raises(ValueError, match="baseline"):
        report.variant_gains({k: v for k, v in predictions.items() if k != "stage1"}, runs)
    with pytest.raises(ValueError, match="unknown variant"):
        report.variant_gains(predictions, {"mystery": ["stage1"]})


def test_figure3_and_evaluation_figures(tmp_path):
    predictions, runs, pairs = variant_predictions()
    gains = report.variant_gains(predictions, runs, n_boot=100, clusters=pairs)
    paths = report.figure3(gains, tmp_path, "toy")
    assert [p.name for p in paths] == ["figure3.png", "figure3.pdf"]
    assert_png(paths[0])
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="unknown variant"):
        report.figure3(gains.assign(variant="mystery"), tmp_path, "toy")

    from morelib.metrics import confusion, per_label
    gold = ["none", A, B, A, "none"] * 5
    pred = ["none", A, A, None, B] * 5
    paths = report.figure_per_label_f1({"MORE-R1": per_label(gold, pred), "Stage 1": per_label(gold, gold)}, tmp_path, "toy")
    assert_png(paths[0])
    paths = report.figure_confusion(confusion(gold, pred), tmp_path, "toy", title="MORE-R1")
    assert_png(paths[0])


def test_figures_are_byte_stable(tmp_path):
    """The same figure is the same bytes on every run (no dates or versions), so a rerun leaves
    the committed figures unchanged."""
    predictions, runs, pairs = variant_predictions()
    gains = report.variant_gains(predictions, runs, n_boot=100, clusters=pairs)
    first = report.figure3(gains, tmp_path / "a", "toy")
    again = report.figure3(gains, tmp_path / "b", "toy")
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"CreationDate" not in first[1].read_bytes()


PREDS = {
    "sft_label_full": {"s1": "none", "s2": A, "s3": A, "s4": B},
    "stage1": {"s1": "none", "s2": B, "s3": A, "s4": B},
    "grpo_progressive": {"s1": "none", "s2": A, "s3": None, "s4": A},
}
GOLD = {"s1": "none", "s2": A, "s3": B, "s4": A}


def test_pick_case_prefers_disagreement_with_more_r1_right():
    # s4: MORE-R1 right, both others wrong -> beats s2 (one other right) and s1 (agreement).
    assert cases.pick_case(PREDS, GOLD) == "s4"
    without_s4 = {m: {k: v for k, v in p.items() if k != "s4"} for m, p in PREDS.items()}
    assert cases.pick_case(without_s4, GOLD) == "s2"
    only_agreement = {m: {"s1": p["s1"]} for m, p in PREDS.items()}
    assert cases.pick_case(only_agreement, GOLD) == "s1"
    assert cases.pick_case({m: {} for m in PREDS}, GOLD) is None
    with pytest.raises(ValueError, match="no predictions"):
        cases.pick_case({"stage1": PREDS["stage1"]}, GOLD)


def test_teaching_cases_find_each_pattern():
    table = cases.case_table(PREDS, GOLD)
    assert table.loc["s3", "grpo_progressive_ok"] == False  # noqa: E712 (unparsed is wrong)
    chosen = cases.teaching_cases(table, list(PREDS), k=2)
    assert chosen["all right"] == ["s1"]
    assert chosen["all wrong"] == ["s3"]
    assert chosen["only grpo_progressive right"] == ["s4"]
    assert chosen["only stage1 wrong"] == ["s2"]


def test_changed_answers_split_a_paired_gain_into_fixed_and_broken():
    table = cases.case_table(PREDS, GOLD)
    changes = cases.changed_answers(table, "stage1", "grpo_progressive")
    assert list(table.index[changes["fixed"]]) == ["s2", "s4"]  # s3: unparsed stays wrong
    assert not changes["broken"].any()
    backwards = cases.changed_answers(table, "grpo_progressive", "stage1")
    assert list(table.index[backwards["broken"]]) == ["s2", "s4"] and not backwards["fixed"].any()
    assert list(table.index[cases.changed_answers(table, "sft_label_full", "stage1")["broken"]]) == ["s2"]


def test_figure4_draws_the_case(tmp_path):
    tokens = ("Anna", "Berg", "joins", "the", "Nordic", "Rowing", "Club", "board", "after", "a", "long", "season")
    sample = Sample(id="test-7", split="test", text=" ".join(tokens), tokens=tokens, entity="Nordic Rowing Club",
                    entity_span=(4, 7), object_name="woman", box=(0.5, 0.5, 0.4, 0.6), img_id="x.jpg",
                    image_path=tmp_path / "x.jpg", label=A)
    image = Image.new("RGB", (320, 240), (200, 220, 240))
    outputs = {
        "label-only SFT": ("/per/per/partner", B),
        "MORE-R1 (Stage 1)": ("<think> Step 1: ... " + "reasoning " * 200 + "</think> <answer>none</answer>", "none"),
        "MORE-R1": ("<think> Step 1: a woman. Step 6: member. </think> <answer>/per/org/member_of</answer>", A),
    }
    paths = report.figure4(sample, outputs, tmp_path, "toy", image=image)
    assert [p.name for p in paths] == ["figure4.png", "figure4.pdf"]
    assert_png(paths[0], min_bytes=30_000, min_size=(1200, 800))
    # The box is drawn in the image panel: count pixels of its colour.
    with Image.open(paths[0]) as img:
        box = sum(1 for r, g, b in img.convert("RGB").get_flattened_data() if r > 230 and 190 < g < 235 and b < 40)
    assert box > 200


def test_load_predictions_parses_and_names_bad_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "gold": A, "text": f"<answer>{A}</answer>"}) + "\n\n"
                    + json.dumps({"id": "b", "gold": A, "text": "x", "label": None}) + "\n")
    rows = evaluation.load_predictions(path)
    assert [r["label"] for r in rows] == [A, None]
    s = evaluation.score_rows(rows, n_boot=50)
    assert s["acc"] == 0.5 and s["n_unparsed"] == 1 and s["f1_low"] <= s["f1"] <= s["f1_high"]
    path.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: field 'gold': missing"):
        evaluation.load_predictions(path)


def test_model_locations_and_skipping_missing_models(tmp_path, capsys):
    run_dir = tmp_path / "run"
    layout = RunLayout(run_dir)
    layout.checkpoint("stage1").mkdir(parents=True)
    layout.model_done("stage1").write_text("{}")  # written last by training: the model is finished
    (layout.checkpoint("grpo_raw") / "ckpt").mkdir(parents=True)  # unfinished: no marker
    assert evaluation.model_location(run_dir, "stage1", "x") == layout.checkpoint("stage1")
    assert evaluation.model_location(run_dir, "grpo_raw", "x") is None
    assert evaluation.model_location(run_dir, "zero_shot", "Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert evaluation.model_location(run_dir, "zero_shot", str(layout.toy_base_model)) is None
    assert evaluation.model_location(run_dir, "zero_shot", "runs/no-such-run/models/base") is None

    class S:  # just what evaluate_models reads from a sample
        def __init__(self, i):
            self.id = i
    samples = [S("test-1"), S("test-2")]
    cached = RunLayout(run_dir).predictions("grpo_raw", "test")
    cached.parent.mkdir(parents=True)
    cached.write_text("".join(json.dumps({"id": i, "gold": "none", "text": "none", "label": "none"}) + "\n" for i in ("test-2", "test-1")))
    out = evaluation.evaluate_models(samples, run_dir, str(layout.toy_base_model), keys=["zero_shot", "grpo_raw"])
    assert list(out) == ["grpo_raw"]
    assert [r["id"] for r in out["grpo_raw"]] == ["test-1", "test-2"]  # in sample order
    printed = capsys.readouterr().out
    assert "zero_shot: SKIPPED" in printed and "grpo_raw: cached" in printed


# ----------------------------------------------------------------------------- notebooks 06 and 07

REASONING_KEYS = {"stage1", "grpo_progressive", "grpo_raw", "grpo_balanced", "grpo_hard_only"}
ACCURACY = {"zero_shot": 0.1, "sft_label_full": 0.5, "sft_label_25": 0.4, "stage1": 0.6,
            "grpo_progressive": 0.75, "grpo_raw": 0.6, "grpo_balanced": 0.65, "grpo_hard_only": 0.55}


def write_synthetic_predictions(run_dir, samples, keys=tuple(ACCURACY), seed=0):
    """Prediction files as notebook 06 caches them, from a fake model per key (no model needed)."""
    import random

    from morelib.labels import RELATIONS

    for key in keys:
        rng = random.Random(f"{seed}:{key}")
        path = RunLayout(run_dir).predictions(key, "test")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for s in samples:
                label = s.label if rng.random() < ACCURACY[key] else rng.choice(RELATIONS)
                if key in REASONING_KEYS:
                    steps = " ".join(f"Step {i}: the {s.object_name} and {s.entity}, point {i}." for i in range(1, 7))
                    text = f"<think> {steps} </think> <answer>{label}</answer>"
                else:
                    text = label
                if rng.random() < 0.05:
                    text, label = text[: len(text) // 2], None  # cut off: unparsable
                f.write(json.dumps({"id": s.id, "gold": s.label, "text": text, "label": label,
                                    "prompt_tokens": 100, "completion_tokens": len(text) // 4}) + "\n")


@pytest.fixture(scope="module")
def toy_run(toy_world):
    run_dir = toy_world.run_dir("report")
    samples = toy_world.samples("test")
    write_synthetic_predictions(run_dir, samples)
    return run_dir, samples


def run_notebook(stem, out_dir, run_dir, overrides):
    """Execute a notebook as the chain runner does: it gets the profile, the run directory and the overrides."""
    import papermill

    from morelib.run import kernel_for_this_interpreter

    with kernel_for_this_interpreter() as kernel:
        papermill.execute_notebook(str(REPO / "notebooks" / f"{stem}.ipynb"), str(out_dir / f"{stem}.ipynb"),
                                   parameters={"profile": "toy", "run_dir": str(run_dir), "overrides": overrides},
                                   kernel_name=kernel, cwd=str(REPO), progress_bar=False)
    return (out_dir / f"{stem}.ipynb").read_text()


REPO = Path(__file__).resolve().parent.parent


def test_notebooks_06_and_07_on_cached_predictions(toy_run, toy_world, tmp_path):
    run_dir, samples = toy_run
    figures = RunLayout(run_dir).figures
    # No model anywhere: every model comes from its cached predictions file.
    overrides = [f"data_dir={toy_world.data_dir}", f"base_model={RunLayout(run_dir).toy_base_model}",
                 # every model and Figure 4's three, whatever the toy profile evaluates by default
                 f"06_evaluation.models=[{', '.join(ACCURACY)}]", f"07_case_studies.models=[{', '.join(cases.CASE_MODELS)}]"]
    executed = run_notebook("06_evaluation", tmp_path, run_dir, overrides + ["06_evaluation.n_boot=100"])
    for name in ("table1.md", "table1.csv", "table1.tex", "figure3.png", "figure3.pdf", "per_label_f1.png", "confusion_matrix.png"):
        assert (figures / name).is_file(), name
    table = pd.read_csv(figures / "table1.csv")
    ours = table[table["source"] == "toy run"].set_index("model")
    assert len(ours) == 5  # the four Stage 2 variants other than MORE-R1 are in Figure 3 only
    expected = evaluation.score_rows(evaluation.load_predictions(RunLayout(run_dir).predictions("stage1", "test")), n_boot=0)
    stage1 = "MORE-R1 (Stage 1) [toy run]"  # a run row names its run, so it is never read as the paper's
    assert ours.loc[stage1, "F1"] == round(100 * expected["f1"], 2)
    assert ours.loc[stage1, "unparsed"] == expected["n_unparsed"]
    assert_png(figures / "figure3.png")
    gains = pd.read_csv(figures / "figure3_gains.csv")
    assert set(gains["variant"]) == set(report.VARIANT_KEYS) and (gains["gain_low"] <= gains["gain_high"]).all()
    assert not figures_not_rendered(nbformat.reads(executed, as_version=4))

    out = run_notebook("07_case_studies", tmp_path, run_dir, overrides)
    assert not figures_not_rendered(nbformat.reads(out, as_version=4))
    assert_png(figures / "figure4.png", min_bytes=30_000, min_size=(1200, 800))
    labels = {k: {r["id"]: r["label"] for r in evaluation.load_predictions(RunLayout(run_dir).predictions(k, "test"))}
              for k in cases.CASE_MODELS}
    chosen = cases.pick_case(labels, {s.id: s.label for s in samples})
    assert f"{chosen}: " in out and "=== all wrong" in out


def test_stage2_experiments_table_sorts_by_valid_gain(tmp_path):
    assert training_logs.stage2_experiments(tmp_path / "experiments") is None
    for name, gain in (("a", -1.5), ("b", 2.0)):
        (tmp_path / "experiments" / name).mkdir(parents=True)
        (tmp_path / "experiments" / name / "result.json").write_text(json.dumps(
            {"name": name, "variant": "progressive", "overrides": ["05_grpo.learning_rate=3e-5", "x=1"],
             "gain": gain, "ci95": [gain - 4, gain + 4], "steps": 10}))
    table = training_logs.stage2_experiments(tmp_path / "experiments")
    assert list(table.index) == ["b", "a"]
    assert table.loc["a", "ci_low"] == -5.5 and table.loc["b", "ci_high"] == 6.0
    assert table.loc["a", "overrides"] == "05_grpo.learning_rate=3e-5, x=1"


def test_extra_seed_runs_are_found_named_and_kept_out_of_table1(tmp_path):
    layout = RunLayout(tmp_path)
    for name in ["grpo_progressive", "grpo_progressive_seed2", "grpo_progressive_seed1", "grpo_raw_seed1",
                 "grpo_progressive_seed3", "grpo_progressive_seedless"]:
        layout.checkpoint(name).mkdir(parents=True)
        if name != "grpo_progressive_seed3":  # unfinished: no done.json
            layout.model_done(name).write_text("{}")
    assert evaluation.seed_runs(tmp_path, ["grpo_progressive"]) == ["grpo_progressive_seed1", "grpo_progressive_seed2"]
    assert evaluation.seed_runs(tmp_path, ["grpo_progressive", "grpo_raw", "grpo_balanced"]) == [
        "grpo_progressive_seed1", "grpo_progressive_seed2", "grpo_raw_seed1"]
    assert run_models.display_name("grpo_raw_seed1") == "Stage 2 variant: raw (seed 1)"
    assert run_models.run_model("grpo_progressive_seed1").prompt == "reasoning"
    assert run_models.run_model("stage1_seed1") is None and run_models.display_name("mystery") == "mystery"
    rows = report.run_rows({"grpo_progressive": scores(0.6, 0.5, 0.5, 0.5), "grpo_progressive_seed1": scores(0, 0, 0, 0)})
    assert [r["model"] for r in rows] == ["MORE-R1"]


def test_seed_spread_and_figure3_dots(tmp_path):
    seed_scores = {"progressive": [scores(0.8, 0.5, 0.5, 0.50), scores(0.8, 0.4, 0.4, 0.40), scores(0.8, 0.6, 0.6, 0.45)],
                   "raw": [scores(0.8, 0.3, 0.3, 0.30)]}
    spread = report.seed_spread(seed_scores, baseline=scores(0.8, 0.45, 0.45, 0.45))
    assert list(spread.index) == ["raw", "progressive"]  # Figure 3's order
    row = spread.loc["progressive"]
    assert (row["seeds"], row["f1_run0"], row["f1_run2"]) == (3, 50.0, 45.0)
    assert row["f1_mean"] == pytest.approx(45.0) and row["f1_sd"] == pytest.approx(5.0)
    assert (row["f1_min"], row["f1_max"]) == (40.0, 50.0)
    assert row["mean_minus_baseline"] == pytest.approx(0.0)
    assert pd.isna(spread.loc["raw", "f1_sd"])
    predictions, runs, _ = variant_predictions(seeds=3)
    gains = report.variant_gains(predictions, {v: runs[v] for v in ("raw", "progressive")}, n_boot=100)
    plain = report.figure3(gains, tmp_path / "plain", "toy")
    dotted = report.figure3(gains, tmp_path / "dots", "toy", seed_scores=seed_scores)
    assert_png(dotted[0])
    assert plain[0].read_bytes() != dotted[0].read_bytes()


def test_length_reward_by_group_shows_a_threshold_that_pays_for_the_label():
    rows = ([{"text": "x" * 420, "gold": "none", "label": "none"}] * 3
            + [{"text": "x" * 520, "gold": A, "label": A}, {"text": "x" * 520, "gold": "none", "label": B}])
    biased = training_logs.length_reward_by_group(rows, make_length_reward(450))
    assert biased.loc["gold none", "n"] == 4 and biased.loc["gold none", "length_reward_rate"] == 0.25
    assert biased.loc["gold relation", "length_reward_rate"] == 1.0
    assert biased.loc["answer right", "length_reward_rate"] == 0.25
    assert biased.loc["answer wrong", "length_reward_rate"] == 1.0
    assert biased.loc["gold none", "min_chars"] == 420
    fair = training_logs.length_reward_by_group(rows, make_length_reward(350))
    assert set(fair["length_reward_rate"]) == {1.0}


def test_grpo_summary_reads_the_grounded_answer_reward_in_the_answers_place(tmp_path):
    """A run that trains with grounded_answer instead of answer still has an answer curve."""
    rows = [{"step": step, "generated": step % 2 == 1, "mix_epoch": 1, "reward": 2.0 + step / 10,
             "rewards/format_reward/mean": 1.0, "rewards/length_reward/mean": 1.0,
             "rewards/grounded_answer_reward/mean": step / 10, "frac_reward_zero_std": 0.5,
             "completions/mean_length": 190.0, "kl": 0.01, "step_time": 1.0, "peak_rss_mb": 900.0}
            for step in range(1, 9)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = training_logs.grpo_summary({"grounded": tmp_path}, window=2)
    assert table.loc["grounded", "answer_start"] == pytest.approx(0.2)  # steps 1 and 3
    assert table.loc["grounded", "answer_end"] == pytest.approx(0.6)  # steps 5 and 7
    assert table.loc["grounded", "format_end"] == 1.0
    log = training_logs.grpo_log(tmp_path)
    assert training_logs.reward_curve(log.drop(columns="rewards/length_reward/mean"), "length").isna().all()
    paths = report.save_figure(report.plot_reward_curves({"grounded": tmp_path}), tmp_path, "rewards")
    assert paths[0].stat().st_size > 5_000
    # The learning signal: the zero-variance share and the entropy of each generation step.
    signal = report.plot_learning_signal({"grounded": tmp_path, "again": tmp_path}, smooth=1)
    panel = signal.axes[0]
    zero_std, = [line for line in panel.get_lines() if line.get_label() == "zero-variance groups"]
    assert list(zero_std.get_xdata()) == [1, 3, 5, 7] and set(zero_std.get_ydata()) == {0.5}
    assert [line.get_label() for line in panel.get_lines()] == ["zero-variance groups"]  # no entropy logged
    assert len(signal.axes) == 2 and panel.get_ylim()[1] == pytest.approx(1.05)


def test_show_figure_gives_the_notebook_an_image_where_a_bare_figure_gives_text():
    """A Figure made by ``report`` has no pyplot manager: IPython formats it as text only, the
    ``<Figure size ...>`` line notebooks 03 and 05 used to show. ``show_figure`` makes it a PNG."""
    import base64

    from IPython.core.formatters import DisplayFormatter

    figure = report._new_figure(4, 3)
    figure.add_subplot().plot([0, 1], [1, 0])
    bare, _ = DisplayFormatter().format(figure)
    assert "image/png" not in bare and bare["text/plain"].startswith("<Figure size")
    shown, _ = DisplayFormatter().format(report.show_figure(figure))
    png = shown["image/png"]
    png = base64.b64decode(png) if isinstance(png, str) else png  # IPython hands notebooks base64
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.figure_png(figure) == report.figure_png(figure)  # byte-stable, like the saved files
