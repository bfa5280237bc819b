"""The MORE micro metric and the extra scores, against hand-computed cases."""

import random

import pytest

from morelib.metrics import (UNPARSED, bootstrap_ci, bootstrap_f1_ci, confusion, macro_f1, paired_bootstrap_f1,
                             paired_mean_gain, per_label, score)

A, B = "/per/per/partner", "/org/loc/locate_at"
GOLD = ["none", A, A, B, "none", B]
PRED = ["none", A, B, None, A, B]


def test_micro_metric_by_hand():
    s = score(GOLD, PRED)
    # correct: samples 0, 1, 5 -> acc 3/6. Non-none (or unparsed) guesses: 1, 2, 3, 4, 5; right: 1, 5.
    # Non-none gold: 1, 2, 3, 5. P = 2/5, R = 2/4, F1 = 2PR/(P+R) = 4/9.
    assert s["acc"] == pytest.approx(0.5)
    assert s["precision"] == pytest.approx(0.4)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(4 / 9)
    assert (s["n"], s["n_unparsed"]) == (6, 1)


def test_unparsed_counts_as_a_wrong_relation_guess():
    # The same outputs with the unparsable one answered "none" instead: precision rises.
    s_none = score(GOLD, ["none", A, B, "none", A, B])
    assert s_none["precision"] == pytest.approx(2 / 4)
    assert s_none["acc"] == score(GOLD, PRED)["acc"]
    # Even with gold none, an unparsable output is wrong.
    assert score(["none"], [None])["acc"] == 0.0


def test_zero_denominators_give_zero():
    all_none = score(["none", "none"], ["none", "none"])
    assert all_none == {"acc": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "n": 2, "n_unparsed": 0}
    assert score([], [])["acc"] == 0.0
    assert score([A], ["none"])["f1"] == 0.0  # recall 0, precision 0/0
    assert score(["none"], [A])["precision"] == 0.0


def test_metric_matches_a_direct_count_on_random_data():
    rng = random.Random(0)
    labels = ["none", "none", "none", A, B, "/per/misc/awarded"]
    gold = [rng.choice(labels) for _ in range(500)]
    pred = [rng.choice(labels + [None]) for _ in range(500)]
    s = score(gold, pred)
    correct_pos = sum(g == p and p != "none" for g, p in zip(gold, pred))
    guessed = sum(p != "none" for p in pred)  # None != "none": an unparsed output is a guess
    gold_pos = sum(g != "none" for g in gold)
    p, r = correct_pos / guessed, correct_pos / gold_pos
    assert s["precision"] == pytest.approx(p) and s["recall"] == pytest.approx(r)
    assert s["f1"] == pytest.approx(2 * p * r / (p + r))
    assert 0 <= s["acc"] <= 1


def test_length_mismatch_and_none_gold_are_errors():
    with pytest.raises(ValueError, match="6 items but pred has 5"):
        score(GOLD, PRED[:5])
    with pytest.raises(ValueError, match="None"):
        score([None], ["none"])


def test_per_label_and_macro_f1_by_hand():
    table = per_label(GOLD, PRED)
    assert list(table.index) == ["none", A, B]  # the release's label order
    assert table.loc[A, "precision"] == pytest.approx(0.5) and table.loc[A, "recall"] == pytest.approx(0.5)
    assert table.loc[B, "f1"] == pytest.approx(0.5)
    assert table.loc["none", "f1"] == pytest.approx(2 / 3)
    assert list(table["support"]) == [2, 2, 2]
    assert list(table["predicted"]) == [1, 2, 2]
    assert macro_f1(GOLD, PRED) == pytest.approx(0.5)
    assert macro_f1(GOLD, PRED, include_none=True) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_confusion_has_an_unparsed_column_and_sums_to_n():
    table = confusion(GOLD, PRED)
    assert list(table.columns) == ["none", A, B, UNPARSED]
    assert table.loc[B, UNPARSED] == 1
    assert table.loc["none", A] == 1
    assert table.loc[A, B] == 1
    assert table.to_numpy().sum() == len(GOLD)
    assert confusion(GOLD, PRED, all_labels=True).shape == (21, 22)


def test_bootstrap_interval_brackets_f1_and_is_seeded():
    rng = random.Random(1)
    gold = [rng.choice(["none", A, B]) for _ in range(300)]
    pred = [g if rng.random() < 0.7 else rng.choice(["none", A, B]) for g in gold]
    ci = bootstrap_f1_ci(gold, pred, n=500, seed=0)
    assert ci["low"] < ci["f1"] < ci["high"]
    assert ci == bootstrap_f1_ci(gold, pred, n=500, seed=0)
    assert ci != bootstrap_f1_ci(gold, pred, n=500, seed=1)
    narrow = bootstrap_f1_ci(gold * 10, pred * 10, n=500, seed=0)
    assert narrow["high"] - narrow["low"] < ci["high"] - ci["low"]
    perfect = bootstrap_f1_ci(gold, gold, n=100)
    assert perfect["low"] == perfect["high"] == 1.0
    with pytest.raises(ValueError):
        bootstrap_f1_ci(gold, pred, alpha=0)


def noisy_case(size=200, seed=1):
    rng = random.Random(seed)
    gold = [rng.choice(["none", A, B]) for _ in range(size)]
    pred = [g if rng.random() < 0.7 else rng.choice(["none", A, B]) for g in gold]
    better = [g if rng.random() < 0.85 else rng.choice(["none", A, B]) for g in gold]
    return gold, pred, better


def test_one_sample_per_cluster_draws_as_the_plain_bootstrap():
    gold, pred, better = noisy_case()
    singletons = [f"img{i}" for i in range(len(gold))]
    assert bootstrap_f1_ci(gold, pred, n=300, clusters=singletons) == bootstrap_f1_ci(gold, pred, n=300)
    assert paired_bootstrap_f1(gold, pred, better, n=300, clusters=singletons) == \
        paired_bootstrap_f1(gold, pred, better, n=300)
    assert bootstrap_ci(gold, pred, n=300, clusters=singletons) == bootstrap_ci(gold, pred, n=300)


def test_the_cluster_bootstrap_keeps_an_image_text_pairs_facts_together():
    """Six copies of each fact in one pair hold no more information than the fact itself: the
    cluster bootstrap gives the interval of the 200 facts, the fact-level one a far too narrow one."""
    gold, pred, better = noisy_case()
    copies = 6
    gold6, pred6, better6 = ([x for x in xs for _ in range(copies)] for xs in (gold, pred, better))
    pairs = [f"img{i // copies}" for i in range(len(gold6))]
    width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
    alone = width(paired_bootstrap_f1(gold, pred, better, n=500))
    by_pair = width(paired_bootstrap_f1(gold6, pred6, better6, n=500, clusters=pairs))
    by_fact = width(paired_bootstrap_f1(gold6, pred6, better6, n=500))
    assert by_pair == pytest.approx(alone, rel=0.15)
    assert by_fact < 0.6 * by_pair
    with pytest.raises(ValueError, match="clusters has 3 keys"):
        bootstrap_f1_ci(gold, pred, clusters=["a", "b", "c"])


def test_paired_mean_gain_over_seeds_by_hand():
    gold = ["none", A, A, B]
    base = ["none", A, "none", "none"]  # F1: P 1/1, R 1/3 -> 0.5
    runs = [["none", A, A, "none"],  # P 2/2, R 2/3 -> 0.8
            ["none", A, A, B]]  # 1.0
    gains = paired_mean_gain(gold, base, runs, n=200, clusters=["p1", "p1", "p2", "p3"])
    assert gains["f1"]["base"] == pytest.approx(0.5) and gains["f1"]["mean"] == pytest.approx(0.9)
    assert gains["f1"]["gain"] == pytest.approx(0.4)
    assert gains["acc"]["gain"] == pytest.approx((0.75 + 1.0) / 2 - 0.5)
    for metric in ("acc", "precision", "recall", "f1"):
        assert gains[metric]["low"] <= gains[metric]["gain"] <= gains[metric]["high"]
    one = paired_mean_gain(gold, base, runs[:1], n=200, seed=3)["f1"]
    assert (one["gain"], one["low"], one["high"]) == pytest.approx(
        tuple(paired_bootstrap_f1(gold, base, runs[0], n=200, seed=3)[k] for k in ("delta", "low", "high")))
    with pytest.raises(ValueError):
        paired_mean_gain(gold, base, [])
