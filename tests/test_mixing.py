"""Progressive Sample-Mixing: per-epoch counts, seeded stratified draws, the printed plan."""

import json
import warnings

import pytest

from morelib.mixing import (
    VARIANTS, build_epoch_mixes, easy_counts, epoch_end_steps, format_plan, load_or_build_mix, none_share,
    plan_table, prompts_per_batch,
)

PAPER = dict(epochs=4, gamma=0.5)  # the paper's mix: 4 epochs, gamma 0.5


def test_paper_numbers_for_every_variant():
    assert easy_counts(2370, 8853, **PAPER) == [2370, 1185, 592, 296]
    assert easy_counts(2370, 8853, **PAPER, variant="raw") == [8853] * 4
    assert easy_counts(2370, 8853, **PAPER, variant="balanced") == [2370] * 4
    assert easy_counts(2370, 8853, **PAPER, variant="hard_only") == [0] * 4
    assert set(VARIANTS) == {"raw", "balanced", "hard_only", "progressive"}


def test_a_variant_is_registered_once_and_the_report_and_evaluation_read_it():
    """Figure 3's legend and colours, the model keys and Table 1's rows all come from MIXING_VARIANTS
    (and are what they were before the registry: a refactor changes no table or figure)."""
    from morelib import report, run_models
    from morelib.mixing import MIXING_VARIANTS

    assert VARIANTS == ("raw", "balanced", "hard_only", "progressive")  # Figure 3's order, the paper's
    assert {n: (v.label, v.colour, v.model_key, v.paper_row) for n, v in MIXING_VARIANTS.items()} == {
        "raw": ("raw", "#bbbbbb", "grpo_raw", None), "balanced": ("1:1", "#88aacc", "grpo_balanced", None),
        "hard_only": ("hard only", "#ddaa66", "grpo_hard_only", None),
        "progressive": ("progressive (MORE-R1)", "#cc3333", "grpo_progressive", "MORE-R1")}
    assert all(v.description for v in MIXING_VARIANTS.values())
    assert report.VARIANT_KEYS == {n: v.model_key for n, v in MIXING_VARIANTS.items()}
    assert report.VARIANT_NAMES == {n: v.label for n, v in MIXING_VARIANTS.items()}
    assert [(m.key, m.name, m.paper_row, m.in_table1) for m in run_models.RUN_MODELS[4:]] == [
        ("grpo_progressive", "MORE-R1", "MORE-R1", True),
        ("grpo_raw", "Stage 2 variant: raw", None, False), ("grpo_balanced", "Stage 2 variant: 1:1", None, False),
        ("grpo_hard_only", "Stage 2 variant: hard only", None, False)]
    assert [m.key for m in run_models.RUN_MODELS[:4]] == ["zero_shot", "sft_label_full", "sft_label_25", "stage1"]


def test_rounding_is_explicit():
    # 2370 / 4 = 592.5: Python's round (half to even) gives 592.
    assert easy_counts(2370, 8853, **PAPER, rounding="half_up") == [2370, 1185, 593, 296]
    assert easy_counts(2370, 8853, **PAPER, rounding="floor") == [2370, 1185, 592, 296]
    assert easy_counts(10, 100, epochs=3, gamma=0.25, rounding="half_up") == [10, 3, 1]
    with pytest.raises(ValueError, match="rounding"):
        easy_counts(10, 10, **PAPER, rounding="up")


def test_counts_are_capped_by_the_easy_pool_and_inputs_checked():
    assert easy_counts(100, 30, **PAPER) == [30, 30, 25, 12]
    assert easy_counts(100, 30, **PAPER, variant="balanced") == [30] * 4
    assert easy_counts(8, 100, epochs=2, gamma=1.0) == [8, 8]
    for bad in (dict(variant="mixed"), dict(gamma=0.0), dict(gamma=1.5), dict(epochs=0)):
        with pytest.raises(ValueError):
            easy_counts(10, 10, **{**PAPER, **bad})


def make_pool(n_hard=40, n_easy_none=150, n_easy_other=50):
    hard = [f"h{i}" for i in range(n_hard)]
    easy = [f"en{i}" for i in range(n_easy_none)] + [f"eo{i}" for i in range(n_easy_other)]
    labels = {i: "none" for i in easy if i.startswith("en")}
    labels.update({i: "/per/per/partner" for i in easy if i.startswith("eo")})
    labels.update({h: "none" if k % 3 == 0 else "/per/org/member_of" for k, h in enumerate(hard)})
    return hard, easy, labels


def test_every_epoch_has_all_hard_samples_and_the_planned_easy_count():
    hard, easy, labels = make_pool()
    mixes = build_epoch_mixes(hard, easy, labels, epochs=4, gamma=0.5, none_ratio=0.8, seed=1)
    plan = plan_table(mixes, labels, hard)
    assert list(plan["n_hard"]) == [40] * 4
    assert list(plan["n_easy"]) == [40, 20, 10, 5]
    assert list(plan["total"]) == [80, 60, 50, 45]
    for mix in mixes:
        assert set(hard) <= set(mix) and len(set(mix)) == len(mix)
    # Easy draws keep the requested none share: round(k * 0.8) none among k easy samples.
    assert list(plan["n_easy_none"]) == [32, 16, 8, 4]
    hard_none = sum(labels[i] == "none" for i in hard)
    assert list(plan["n_none"]) == [hard_none + x for x in (32, 16, 8, 4)]
    assert (plan["n_none"] + plan["n_non_none"] == plan["total"]).all()
    text = format_plan(plan, "progressive")
    assert "progressive" in text and "n_easy" in text and "235 samples over 4 epochs" in text


def test_draws_are_seeded_shuffled_and_independent_of_input_order():
    hard, easy, labels = make_pool()
    a = build_epoch_mixes(hard, easy, labels, **PAPER, none_ratio=0.8, seed=3)
    b = build_epoch_mixes(list(reversed(hard)), list(reversed(easy)), labels, **PAPER, none_ratio=0.8, seed=3)
    c = build_epoch_mixes(hard, easy, labels, **PAPER, none_ratio=0.8, seed=4)
    assert a == b
    assert a != c
    assert a[0][:40] != sorted(hard)  # shuffled: hard samples are not all in front
    assert set(a[1]) - set(hard) != set(a[2]) - set(hard)


def test_default_none_ratio_comes_from_labels_by_id():
    hard, easy, labels = make_pool()
    ratio = none_share(list(labels.values()))
    explicit = build_epoch_mixes(hard, easy, labels, **PAPER, none_ratio=ratio, seed=0)
    assert build_epoch_mixes(hard, easy, labels, **PAPER, seed=0) == explicit


def test_a_short_side_is_filled_from_the_other_and_said():
    hard, easy, labels = make_pool(n_hard=40, n_easy_none=150, n_easy_other=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixes = build_epoch_mixes(hard, easy, labels, **PAPER, none_ratio=0.5, seed=0)
    said = [str(w.message) for w in caught]
    assert said[0] == "epoch 1: wanted 20 none + 20 non-none easy samples, pools hold 150 + 5; drew 35 + 5"
    assert len(said) == 2  # epochs 3 and 4 want at most 5 non-none: no shortfall
    plan = plan_table(mixes, labels, hard)
    assert plan.loc[1, "n_easy"] == 40 and plan.loc[1, "n_easy_none"] == 35


def test_raw_and_hard_only_variants():
    hard, easy, labels = make_pool()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # taking the whole pool is not a shortfall
        raw = build_epoch_mixes(hard, easy, labels, **PAPER, variant="raw", none_ratio=0.5)
    assert all(sorted(m) == sorted(hard + easy) for m in raw)
    only = build_epoch_mixes(hard, easy, labels, **PAPER, variant="hard_only")
    assert all(sorted(m) == sorted(hard) for m in only)


def test_bad_inputs_are_named():
    hard, easy, labels = make_pool()
    with pytest.raises(ValueError, match="both hard and easy"):
        build_epoch_mixes(hard, easy + hard[:2], labels, **PAPER)
    with pytest.raises(ValueError, match="no label"):
        build_epoch_mixes(hard + ["ghost"], easy, labels, **PAPER)
    with pytest.raises(ValueError, match="none_ratio"):
        build_epoch_mixes(hard, easy, labels, **PAPER, none_ratio=1.5)


# ----------------------------------------------------------------------------- the saved mix


def split_rows(n_hard=12, n_easy=30):
    """Difficulty-split rows as notebook 04 writes them: every third easy sample is none."""
    hard = [{"id": f"h{i}", "label": "/per/org/member_of", "difficulty": "hard"} for i in range(n_hard)]
    easy = [{"id": f"e{i}", "label": "none" if i % 3 == 0 else "/per/per/partner", "difficulty": "easy"}
            for i in range(n_easy)]
    return hard + easy


MIX = dict(variant="progressive", epochs=3, gamma=0.5, none_ratio=0.4, seed=0)


def test_mix_is_built_once_saved_and_reused(tmp_path):
    path = tmp_path / "grpo" / "progressive" / "mix.json"
    mixes, hard = load_or_build_mix(path, split_rows(), **MIX)
    assert hard == [f"h{i}" for i in range(12)]
    assert [len(m) for m in mixes] == [12 + 12, 12 + 6, 12 + 3]
    saved = json.loads(path.read_text())
    assert saved["epochs"] == mixes and saved["hard_ids"] == hard and saved["n_easy_pool"] == 30
    # A resumed run reads the saved mix verbatim (a rebuild would reshuffle it).
    saved["epochs"][0] = list(reversed(saved["epochs"][0]))
    path.write_text(json.dumps(saved))
    again, _ = load_or_build_mix(path, split_rows(), **MIX)
    assert again[0] == list(reversed(mixes[0])) and again[1:] == mixes[1:]
    # Other processes only read; one that finds no saved mix says so.
    assert load_or_build_mix(path, split_rows(), **MIX, write=False)[0] == again
    with pytest.raises(FileNotFoundError, match="main process"):
        load_or_build_mix(tmp_path / "other.json", split_rows(), **MIX, write=False)


def test_a_saved_mix_built_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "mix.json"
    load_or_build_mix(path, split_rows(), **MIX)
    for change, field in ((dict(gamma=0.25), "gamma"), (dict(seed=1), "seed"), (dict(variant="raw"), "variant"),
                          (dict(max_hard=4), "max_hard_samples")):
        with pytest.raises(ValueError, match=rf"mix\.json: field 'settings\.{field}' .* delete .* to rebuild"):
            load_or_build_mix(path, split_rows(), **{**MIX, **change})


def test_seeded_subsets_cap_hard_and_easy(tmp_path):
    mixes, hard = load_or_build_mix(tmp_path / "a.json", split_rows(), **{**MIX, "variant": "raw"}, max_hard=4, max_easy=5)
    assert len(hard) == 4 and all(len(m) == 9 for m in mixes)
    same, _ = load_or_build_mix(tmp_path / "b.json", split_rows(), **{**MIX, "variant": "raw"}, max_hard=4, max_easy=5)
    assert same == mixes
    with pytest.raises(ValueError, match="no hard samples"):
        load_or_build_mix(tmp_path / "c.json", split_rows(n_hard=0), **MIX)


def test_prompts_per_generation_batch():
    # TRL counts completions per device: 8 per device x 2 processes x 1 step = 16 = 2 prompts x 8 completions.
    assert prompts_per_batch(8, 2, 1, 8) == 2
    assert prompts_per_batch(16, 8, 1, 8) == 16  # the paper profile on 8 GPUs
    with pytest.raises(ValueError, match="multiple of num_generations=3"):
        prompts_per_batch(8, 1, 1, 3)


def test_epoch_end_steps():
    # 2 prompts per generation batch, each batch serves 2 updates; 5 rows -> 3 batches (the third
    # straddles epochs 1 and 2 and counts to epoch 1); the incomplete last batch is dropped.
    assert epoch_end_steps([["a"] * 5, ["b"] * 4, ["c"] * 3], 2, 2) == [6, 10, 12]
    assert epoch_end_steps([["a"] * 4, ["b"] * 4], 2, 1) == [2, 4]
