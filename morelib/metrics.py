"""Evaluation metrics: the MORE micro metric, per-label scores, confusion matrix, bootstrap CI.

The MORE benchmark's metric (identical in the MORE, REMOTE, HVFormer and FocalMRE code):
Acc = correct / all; Precision = correct non-none predictions / non-none predictions;
Recall = correct non-none predictions / non-none gold; F1 = 2PR / (P + R); 0 when a
denominator is 0. ``none`` is the negative class.

A prediction that cannot be parsed (``None``) is wrong. It is scored as the reference code
scores any label id that is neither ``none`` nor the gold: it lowers accuracy, is a miss for
recall, and counts in precision's denominator as a (wrong) relation prediction. ``score``
reports how many there were (``n_unparsed``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from morelib.labels import NONE, RELATIONS

UNPARSED = "unparsed"  # the confusion matrix's column for predictions that could not be parsed


def _check(gold: Sequence[str], pred: Sequence[str | None]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items but pred has {len(pred)}")
    bad = [i for i, g in enumerate(gold) if g is None]
    if bad:
        raise ValueError(f"gold labels must not be None (positions {bad[:5]})")


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _counts(gold: np.ndarray, pred: np.ndarray, unparsed: np.ndarray) -> tuple[np.ndarray, ...]:
    correct = (gold == pred) & ~unparsed
    guessed = (pred != NONE) | unparsed  # an unparsed output is a non-none (wrong) guess
    gold_pos = gold != NONE
    return correct, correct & guessed, guessed, gold_pos


def _prf(correct_pos: float, guessed: float, gold_pos: float) -> tuple[float, float, float]:
    p, r = _ratio(correct_pos, guessed), _ratio(correct_pos, gold_pos)
    return p, r, _ratio(2 * p * r, p + r)


def _arrays(gold, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check(gold, pred)
    unparsed = np.array([p is None for p in pred], dtype=bool)
    g = np.array(list(gold), dtype=object)
    p = np.array([UNPARSED if x is None else x for x in pred], dtype=object)
    return g, p, unparsed


def score(gold: Sequence[str], pred: Sequence[str | None]) -> dict:
    """The MORE micro metric: {"acc", "precision", "recall", "f1"} in [0, 1], plus "n", "n_unparsed"."""
    g, p, unparsed = _arrays(gold, pred)
    correct, correct_pos, guessed, gold_pos = _counts(g, p, unparsed)
    prec, rec, f1 = _prf(correct_pos.sum(), guessed.sum(), gold_pos.sum())
    return {
        "acc": _ratio(correct.sum(), len(g)),
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "n": len(g),
        "n_unparsed": int(unparsed.sum()),
    }


def _present_labels(gold, pred, relations: Sequence[str]) -> list[str]:
    seen = set(gold) | {p for p in pred if p is not None}
    extra = sorted(seen - set(relations))  # labels outside the set still get a row, at the end
    return [r for r in relations if r in seen] + extra


def per_label(gold: Sequence[str], pred: Sequence[str | None], relations: Sequence[str] = RELATIONS) -> pd.DataFrame:
    """Precision, recall, F1, support (gold count) and predicted count for each label seen."""
    _check(gold, pred)
    rows = []
    for lab in _present_labels(gold, pred, relations):
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        n_pred = sum(1 for p in pred if p == lab)
        support = sum(1 for g in gold if g == lab)
        prec, rec, f1 = _prf(tp, n_pred, support)
        rows.append({"label": lab, "precision": prec, "recall": rec, "f1": f1, "support": support, "predicted": n_pred})
    return pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support", "predicted"]).set_index("label")


def macro_f1(gold: Sequence[str], pred: Sequence[str | None], include_none: bool = False) -> float:
    """The mean per-label F1 over labels present in gold (``none`` left out unless asked)."""
    table = per_label(gold, pred)
    table = table[table["support"] > 0]
    if not include_none:
        table = table[table.index != NONE]
    return float(table["f1"].mean()) if len(table) else 0.0


def confusion(gold: Sequence[str], pred: Sequence[str | None], relations: Sequence[str] = RELATIONS, all_labels: bool = False) -> pd.DataFrame:
    """Counts with gold labels as rows and predicted labels as columns, plus an "unparsed" column.

    Only labels seen in gold or pred appear unless ``all_labels``.
    """
    _check(gold, pred)
    labels = list(relations) if all_labels else _present_labels(gold, pred, relations)
    table = pd.DataFrame(0, index=pd.Index(labels, name="gold"), columns=pd.Index(labels + [UNPARSED], name="pred"))
    for g, p in zip(gold, pred):
        col = UNPARSED if p is None else p
        if g not in table.index:
            table.loc[g] = 0
        if col not in table.columns:
            table[col] = 0
        table.loc[g, col] += 1
    return table


METRICS = ("acc", "precision", "recall", "f1")


def _metric_columns(gold, pred) -> np.ndarray:
    """Per sample: 1 (the sample), right, right non-none, guessed non-none, gold non-none; (n, 5) ints."""
    g, p, unparsed = _arrays(gold, pred)
    return np.stack([np.ones(len(g), dtype=bool), *_counts(g, p, unparsed)], axis=1).astype(np.int64)


def _metrics_from_sums(sums: np.ndarray) -> np.ndarray:
    """(draws, 5) summed ``_metric_columns`` -> (draws, 4): acc, precision, recall, F1."""
    n, c_all, c, gu, go = sums.T
    acc = np.divide(c_all, n, out=np.zeros(len(n)), where=n > 0)
    prec = np.divide(c, gu, out=np.zeros(len(c)), where=gu > 0)
    rec = np.divide(c, go, out=np.zeros(len(c)), where=go > 0)
    den = prec + rec
    f1 = np.divide(2 * prec * rec, den, out=np.zeros(len(c)), where=den > 0)
    return np.stack([acc, prec, rec, f1], axis=1)


def _resampled_sums(columns: np.ndarray, n: int, seed: int, clusters: Sequence | None = None):
    """Yield, chunk by chunk, the column sums of ``n`` bootstrap resamples: (draws, k) arrays.

    Without ``clusters`` a resample draws samples with replacement. With ``clusters`` (one key per
    sample, e.g. its image-text pair) it draws whole clusters with replacement and keeps all their
    samples together: the facts of one image-text pair share the image and the text, so they are not
    independent, and resampling them one by one would make the intervals too narrow. Clusters are
    taken in order of first appearance, so one sample per cluster draws exactly as without clusters.
    """
    if clusters is not None:
        if len(clusters) != len(columns):
            raise ValueError(f"clusters has {len(clusters)} keys but there are {len(columns)} samples")
        index: dict = {}
        ids = np.array([index.setdefault(key, len(index)) for key in clusters])
        per_cluster = np.zeros((len(index), columns.shape[1]), dtype=np.int64)
        np.add.at(per_cluster, ids, columns)
        columns = per_cluster
    rng = np.random.default_rng(seed)
    units = len(columns)
    chunk = max(1, 2_000_000 // units)  # bounds memory at a few million indices per step
    for start in range(0, n, chunk):
        idx = rng.integers(0, units, size=(min(chunk, n - start), units))
        yield columns[idx].sum(axis=1)


def bootstrap_f1_ci(
    gold: Sequence[str], pred: Sequence[str | None], n: int = 1000, alpha: float = 0.05, seed: int = 0,
    clusters: Sequence | None = None,
) -> dict:
    """F1 with a percentile bootstrap interval: {"f1", "low", "high", "n_boot", "alpha"}.

    Resamples test samples with replacement ``n`` times, or whole ``clusters`` (one key per sample,
    see ``_resampled_sums``) (beyond the paper: small test sets need it).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if len(gold) == 0:
        raise ValueError("bootstrap_f1_ci needs at least one sample")
    columns = _metric_columns(gold, pred)
    f1s = np.concatenate([_metrics_from_sums(sums)[:, 3] for sums in _resampled_sums(columns, n, seed, clusters)])
    low, high = np.quantile(f1s, [alpha / 2, 1 - alpha / 2])
    return {"f1": score(gold, pred)["f1"], "low": float(low), "high": float(high), "n_boot": n, "alpha": alpha}


def paired_mean_gain(gold: Sequence[str], base: Sequence[str | None], runs: Sequence[Sequence[str | None]],
                     n: int = 1000, alpha: float = 0.05, seed: int = 0, clusters: Sequence | None = None) -> dict:
    """The mean over ``runs`` (e.g. one model trained with several seeds) minus ``base``, for every
    metric, with a paired percentile bootstrap interval: ``{metric: {"mean", "base", "gain", "low",
    "high"}}``, in [0, 1].

    Every draw scores ``base`` and each run on the same resampled test set (or the same resampled
    ``clusters``), so the interval is that of the gain itself. It covers the test set's noise only:
    the seeds are the runs given, not a sample of training runs (beyond the paper).
    """
    if not runs or any(len(r) != len(gold) for r in (base, *runs)) or not len(gold):
        raise ValueError(f"need one or more runs, each as long as gold ({len(gold)}) and non-empty")
    models = [_metric_columns(gold, pred) for pred in (base, *runs)]
    width = models[0].shape[1]
    both = np.concatenate(models, axis=1)
    draws = []
    for sums in _resampled_sums(both, n, seed, clusters):
        scored = np.stack([_metrics_from_sums(sums[:, i * width:(i + 1) * width]) for i in range(len(models))])
        draws.append(scored[1:].mean(axis=0) - scored[0])
    gains = np.concatenate(draws)
    low, high = np.quantile(gains, [alpha / 2, 1 - alpha / 2], axis=0)
    full = _metrics_from_sums(both.sum(axis=0).reshape(len(models), width))
    mean, base_score = full[1:].mean(axis=0), full[0]
    return {m: {"mean": float(mean[i]), "base": float(base_score[i]), "gain": float(mean[i] - base_score[i]),
                "low": float(low[i]), "high": float(high[i])} for i, m in enumerate(METRICS)}


def paired_bootstrap_f1(gold: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None],
                        n: int = 1000, alpha: float = 0.05, seed: int = 0, clusters: Sequence | None = None) -> dict:
    """F1(b) - F1(a) with a paired percentile bootstrap interval: {"delta", "low", "high", "n_boot"}.

    Both models are scored on the same resampled test samples (or ``clusters``) in every draw, so the
    interval is that of the gain itself, narrower than comparing two separate intervals (beyond the paper).
    """
    if not (len(gold) == len(pred_a) == len(pred_b)) or not len(gold):
        raise ValueError(f"need equally long, non-empty lists; got {len(gold)}, {len(pred_a)}, {len(pred_b)}")
    f1 = paired_mean_gain(gold, pred_a, [pred_b], n=n, alpha=alpha, seed=seed, clusters=clusters)["f1"]
    return {"delta": f1["gain"], "low": f1["low"], "high": f1["high"], "n_boot": n}


def bootstrap_ci(gold: Sequence[str], pred: Sequence[str | None], n: int = 1000, alpha: float = 0.05,
                 seed: int = 0, clusters: Sequence | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of acc, precision, recall and F1: ``{metric: (low, high)}``."""
    if len(gold) == 0:
        raise ValueError("bootstrap_ci needs at least one sample")
    columns = _metric_columns(gold, pred)
    draws = np.concatenate([_metrics_from_sums(sums) for sums in _resampled_sums(columns, n, seed, clusters)])
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(METRICS, low, high)}
