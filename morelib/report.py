"""Table 1, Figure 3, Figure 4 and the evaluation figures, from prediction files; the training
curves, from the logs ``morelib.training_logs`` reads. Which case Figure 4 shows is
``morelib.cases``.

Rows and figures always say where their numbers come from: the paper's numbers are labelled
"reported (paper)", this run's numbers are labelled with the profile ("toy run"), and the two
never share a row. Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas), so
nothing here changes the notebook's plotting backend.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from morelib.run_models import RUN_MODELS
from morelib.mixing import MIXING_VARIANTS
from morelib.reported import GROUPS, TABLE1
from morelib.layout import TABLE1_STEM
from morelib.training_logs import grpo_log, reward_curve, training_log

REPORTED = "reported (paper)"
METRIC_COLUMNS = {"acc": "Acc", "precision": "P", "recall": "R", "f1": "F1"}
TABLE1_COLUMNS = ["group", "model", "source", "Acc", "P", "R", "F1", "n", "unparsed"]
# Figure 3's variants, in the paper's order (morelib.mixing's registry), and the checkpoint each one is.
VARIANT_KEYS: dict[str, str] = {name: v.model_key for name, v in MIXING_VARIANTS.items()}
VARIANT_NAMES: dict[str, str] = {name: v.label for name, v in MIXING_VARIANTS.items()}
BOX_COLOR = (255, 214, 0)
LINE_BREAKS = re.compile(r"\s*(Step\s*[1-9]\s*:|</think>|<answer>)")


def profile_label(profile: str) -> str:
    """How this run's numbers are labelled: "toy run", "paper run", ..."""
    return f"{profile} run"


def profile_caption(profile: str) -> str:
    """What this run's numbers are, for captions."""
    if profile.startswith("toy"):
        return (f"{profile} run: a tiny model, pretrained on the toy world, trained on synthetic data; the numbers show that the "
                "pipeline works, not what the paper measured")
    return f"{profile_label(profile)}: this package's reproduction"


# ----------------------------------------------------------------------------- Table 1


def run_rows(scores: Mapping[str, dict], include_variants: bool = False) -> list[dict]:
    """Table 1 rows for this run's models (known keys only), in ``RUN_MODELS`` order."""
    rows = []
    for m in RUN_MODELS:
        if m.key in scores and (m.in_table1 or include_variants):
            rows.append({"model": m.name, "group": m.group, **scores[m.key]})
    return rows


def run_block_name(profile: str) -> str:
    """The Table 1 block that holds this run's rows, apart from the paper's groups."""
    if profile.startswith("toy"):
        return f"This run: {profile} profile (synthetic data, tiny pretrained model; not comparable with the rows above)"
    return f"This run: {profile} profile"


def table1(run_rows: Sequence[dict], profile: str) -> pd.DataFrame:
    """The paper's reported rows in the paper's groups, then this run's rows in a block of their own.

    ``run_rows``: dicts with ``model``, ``group`` and ``acc``/``precision``/``recall``/``f1`` in
    [0, 1] (optionally ``n`` and ``n_unparsed``). Run rows keep their paper group's order, and their
    names say which run they come from, so a toy row is never read as a paper's row.
    """
    label = profile_label(profile)
    out = []
    for group in GROUPS:
        for row in TABLE1:
            if row["group"] == group:
                out.append({"group": group, "model": row["model"], "source": REPORTED,
                            **{col: row[key] for key, col in METRIC_COLUMNS.items()}, "n": 3036, "unparsed": None})
    for row in run_rows:
        if row["group"] not in GROUPS:
            raise ValueError(f"run row {row['model']!r}: unknown group {row['group']!r}; expected one of {GROUPS}")
    for row in sorted(run_rows, key=lambda r: GROUPS.index(r["group"])):
        out.append({"group": run_block_name(profile), "model": f"{row['model']} [{label}]", "source": label,
                    **{col: round(100 * row[key], 2) for key, col in METRIC_COLUMNS.items()},
                    "n": row.get("n"), "unparsed": row.get("n_unparsed")})
    df = pd.DataFrame(out, columns=TABLE1_COLUMNS)
    df["n"] = df["n"].astype("Int64")
    df["unparsed"] = df["unparsed"].astype("Int64")
    return df


def _cell(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table1_markdown(df: pd.DataFrame, caption: str = "") -> str:
    lines = []
    if caption:
        lines += [caption, ""]
    cols = [c for c in df.columns if c != "group"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for group, part in df.groupby("group", sort=False):
        lines.append(f"| **{group}** |" + " |" * (len(cols) - 1))
        for _, row in part.iterrows():
            lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def table1_latex(df: pd.DataFrame, caption: str = "") -> str:
    cols = [c for c in df.columns if c != "group"]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * (len(cols) - 2) + "}",
             r"\toprule", " & ".join(_tex(c) for c in cols) + r" \\"]
    for group, part in df.groupby("group", sort=False):
        lines += [r"\midrule", rf"\multicolumn{{{len(cols)}}}{{l}}{{\textit{{{_tex(group)}}}}} \\"]
        for _, row in part.iterrows():
            lines.append(" & ".join(_tex(_cell(row[c])) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [r"\label{tab:table1}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table1(df: pd.DataFrame, out_dirs: Iterable[str | Path], profile: str = "") -> list[Path]:
    """``layout.TABLE1_STEM`` as .md, .csv and .tex in each directory; returns the paths written."""
    caption = ("Table 1. Acc / P / R / F1 in % on the test split. Rows labelled "
               f"'{REPORTED}' are the paper's numbers (MORE test set, 3,036 samples)")
    if profile:
        caption += f"; the other rows are this run's ({profile_caption(profile)})"
    caption += "."
    written = []
    for out_dir in out_dirs:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        md, csv, tex = (out_dir / f"{TABLE1_STEM}.{ext}" for ext in ("md", "csv", "tex"))
        md.write_text(table1_markdown(df, caption))
        df.to_csv(csv, index=False)
        tex.write_text(table1_latex(df, caption))
        written += [md, csv, tex]
    return written


# ----------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


# No dates or versions in the files: the same figure is the same bytes, run after run.
STABLE_METADATA = {"pdf": {"CreationDate": None, "Producer": None, "Creator": None}, "png": {"Software": None}}


def figure_png(fig) -> bytes:
    """``fig`` as PNG bytes, drawn at the resolution the saved figures use."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata=STABLE_METADATA["png"])
    return buffer.getvalue()


def show_figure(fig):
    """An image a notebook can ``display``: a ``Figure`` made here has no pyplot manager, so
    ``display(fig)`` would print only its text form (``<Figure size 640x360 ...>``)."""
    from IPython.display import Image

    return Image(data=figure_png(fig), format="png")


def save_figure(fig, out_dirs: Iterable[str | Path] | str | Path, stem: str, formats=("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` / ``stem.pdf`` into each directory, byte-stable (no dates, no versions).

    The one figure saver of the package: notebooks and report functions all save through it.
    """
    if isinstance(out_dirs, (str, Path)):
        out_dirs = [out_dirs]
    written = []
    for out_dir in out_dirs:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            fig.savefig(path, dpi=150, bbox_inches="tight", metadata=STABLE_METADATA.get(fmt))
            written.append(path)
    return written


def variant_gains(predictions: Mapping[str, Sequence[dict]], runs: Mapping[str, Sequence[str]],
                  baseline: str = "stage1", n_boot: int = 1000, seed: int = 0,
                  clusters: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Figure 3's numbers: per Stage 2 variant and metric, the mean over its training seeds, the
    baseline's score (Stage 1, where Stage 2 starts), and the paired gain of the mean over the
    baseline with its 95% interval, all in points.

    ``runs`` maps a variant (``VARIANT_KEYS``) to the prediction keys of its seeds, the main run
    first. Every model is scored on the samples the baseline and all of them answered; the bootstrap
    resamples those samples, or whole image-text pairs with ``clusters`` (``metrics.paired_mean_gain``).
    """
    from morelib.metrics import METRICS, paired_mean_gain

    if baseline not in predictions:
        raise ValueError(f"variant_gains: no predictions for the baseline {baseline!r}")
    unknown = set(runs) - set(VARIANT_KEYS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; expected some of {list(VARIANT_KEYS)}")
    base = {r["id"]: r for r in predictions[baseline]}
    rows = []
    for variant in [v for v in VARIANT_KEYS if runs.get(v)]:
        by_run = [{r["id"]: r for r in predictions[key]} for key in runs[variant]]
        ids = [i for i in base if all(i in run for run in by_run)]
        gains = paired_mean_gain([base[i]["gold"] for i in ids], [base[i]["label"] for i in ids],
                                 [[run[i]["label"] for i in ids] for run in by_run], n=n_boot, seed=seed,
                                 clusters=[clusters[i] for i in ids] if clusters is not None else None)
        for metric in METRICS:
            g = gains[metric]
            rows.append({"variant": variant, "metric": metric, "seeds": len(by_run), "n": len(ids),
                         "mean": 100 * g["mean"], "baseline": 100 * g["base"], "gain": 100 * g["gain"],
                         "gain_low": 100 * g["low"], "gain_high": 100 * g["high"]})
    return pd.DataFrame(rows, columns=["variant", "metric", "seeds", "n", "mean", "baseline", "gain", "gain_low",
                                       "gain_high"])


def figure3(gains: pd.DataFrame, out_dir, profile: str, stem: str = "figure3",
            seed_scores: Mapping[str, Sequence[dict]] | None = None, unit: str = "image-text pairs") -> list[Path]:
    """Grouped bars: the Stage 2 variants (raw, 1:1, hard only, progressive) over Acc/P/R/F1, against
    Stage 1.

    ``gains`` is ``variant_gains``'s table: each bar is a variant's mean over its seeds, the black
    line across each metric's group is Stage 1, and the error bar is the paired 95% interval of the
    gain over Stage 1, drawn around the bar (an error bar that crosses the Stage 1 line is a gain the
    test split cannot tell from zero). ``seed_scores`` (optional) maps a variant to the scores of
    each of its seeds, drawn as dots. ``unit`` names what the bootstrap resampled, for the title.
    """
    from morelib.metrics import METRICS

    if len(gains) == 0:
        raise ValueError("figure3 needs at least one variant's gains")
    unknown = set(gains["variant"]) - set(VARIANT_KEYS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; expected some of {list(VARIANT_KEYS)}")
    variants = [v for v in VARIANT_KEYS if v in set(gains["variant"])]
    table = gains.set_index(["variant", "metric"])
    n_seeds = int(gains["seeds"].max())
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(variants)
    colors = {name: v.colour for name, v in MIXING_VARIANTS.items()}
    for j, metric in enumerate(METRICS):
        level = table.loc[(variants[0], metric), "baseline"]
        ax.hlines(level, j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1.2, zorder=4,
                  label="Stage 1" if j == 0 else None)
    for i, v in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(METRICS))]
        rows = [table.loc[(v, m)] for m in METRICS]
        values = [r["mean"] for r in rows]
        # the interval of the gain, placed on the bar: Stage 1 + [low, high]
        errors = [[r["gain"] - r["gain_low"] for r in rows], [r["gain_high"] - r["gain"] for r in rows]]
        seeds = int(rows[0]["seeds"])
        name = VARIANT_NAMES[v] + (f" ({seeds} seeds)" if n_seeds > 1 else "")
        ax.bar(xs, values, width, label=name, color=colors[v], yerr=errors, capsize=2,
                      error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        for x, r in zip(xs, rows):  # the gain, above the top of its interval
            ax.text(x, r["baseline"] + r["gain_high"] + 1, f"{r['gain']:+.1f}", ha="center", va="bottom", fontsize=6.5)
        for score in (seed_scores or {}).get(v, []) if seeds > 1 else []:
            ax.plot(xs, [100 * score[k] for k in METRICS], "o", color="black", markersize=2.5, zorder=3)
    ax.set_xticks(range(len(METRICS)), ["Accuracy", "Precision", "Recall", "F1"])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, max(105.0, float((gains["baseline"] + gains["gain_high"]).max()) + 8))
    # below the axes: no bar, interval or label is hidden behind it
    ax.legend(title="Stage 2 sample mixing", fontsize=8, title_fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.08), ncols=3, frameon=False)
    what = f"mean of {n_seeds} training seeds (dots: each seed)" if n_seeds > 1 else "one training run"
    ax.set_title(f"Figure 3 ({profile_label(profile)}): Stage 2 variants against Stage 1 (dashed) on the test split\n"
                 f"bars: {what}; numbers: gain over Stage 1 in points;\n"
                 f"error bars: paired 95% bootstrap interval of the gain, resampling {unit}", fontsize=9)
    fig.text(0.5, -0.14, textwrap.fill(profile_caption(profile), 110), ha="center", va="top", fontsize=8, style="italic")
    return save_figure(fig, out_dir, stem)


def seed_spread(seed_scores: Mapping[str, Sequence[dict]], baseline: dict | None = None) -> pd.DataFrame:
    """Per Stage 2 variant, its test F1 over training seeds (F1 points): one column per seed in
    the order given (the main run first), then mean, standard deviation, min and max, and the mean
    minus the baseline's F1 (Stage 1) when given."""
    rows = []
    for variant in [v for v in VARIANT_KEYS if v in seed_scores]:
        f1 = [100 * score["f1"] for score in seed_scores[variant]]
        row = {"variant": variant, "seeds": len(f1), **{f"f1_run{i}": value for i, value in enumerate(f1)},
               "f1_mean": float(np.mean(f1)), "f1_sd": float(np.std(f1, ddof=1)) if len(f1) > 1 else float("nan"),
               "f1_min": min(f1), "f1_max": max(f1)}
        if baseline is not None:
            row["mean_minus_baseline"] = row["f1_mean"] - 100 * baseline["f1"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def _short(label: str) -> str:
    return label.lstrip("/")


def figure_per_label_f1(tables: Mapping[str, pd.DataFrame], out_dir, profile: str, stem: str = "per_label_f1") -> list[Path]:
    """Horizontal bars of per-label F1 (``metrics.per_label`` tables), one colour per model."""
    if not tables:
        raise ValueError("figure_per_label_f1 needs at least one model's per-label table")
    labels: list[str] = []
    for t in tables.values():
        labels += [lab for lab in t.index if lab not in labels]
    fig = _new_figure(8, 1.2 + 0.32 * len(labels) * max(1, len(tables)) ** 0.5)
    ax = fig.add_subplot()
    height = 0.8 / len(tables)
    for i, (name, t) in enumerate(tables.items()):
        ys = [j + (i - (len(tables) - 1) / 2) * height for j in range(len(labels))]
        ax.barh(ys, [100 * t["f1"].get(lab, 0.0) for lab in labels], height, label=name)
    support = next(iter(tables.values()))["support"]
    ax.set_yticks(range(len(labels)), [f"{_short(lab)} (n={int(support.get(lab, 0))})" for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("F1 (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Per-label F1 ({profile_label(profile)})")
    return save_figure(fig, out_dir, stem)


def figure_confusion(table: pd.DataFrame, out_dir, profile: str, title: str = "", stem: str = "confusion_matrix") -> list[Path]:
    """The confusion matrix (gold rows, predicted columns incl. "unparsed") with counts."""
    n_rows, n_cols = table.shape
    fig = _new_figure(2 + 0.42 * n_cols, 1.8 + 0.38 * n_rows)
    ax = fig.add_subplot()
    values = table.to_numpy()
    # Colour by the share of each gold row (none dwarfs the rest in counts); write the counts.
    totals = values.sum(axis=1, keepdims=True)
    shares = values / np.where(totals == 0, 1, totals)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for r in range(n_rows):
        for c in range(n_cols):
            if values[r, c]:
                ax.text(c, r, str(values[r, c]), ha="center", va="center", fontsize=6,
                        color="white" if shares[r, c] > 0.5 else "black")
    ax.set_xticks(range(n_cols), [_short(c) for c in table.columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n_rows), [_short(r) for r in table.index], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the gold row")
    ax.set_title(f"Confusion matrix{': ' + title if title else ''} ({profile_label(profile)})")
    return save_figure(fig, out_dir, stem)


# ----------------------------------------------------------------------------- Figure 4


def _flow_tokens(ax, tokens: Sequence[str], span: tuple[int, int], fontsize: float, top: float = 0.95) -> float:
    """Write tokens left to right with wrapping, the span's tokens highlighted; returns the last y."""
    renderer = ax.figure.canvas.get_renderer()
    inverse = ax.transAxes.inverted()
    space = 0.3 * fontsize / 72 / ax.get_window_extent(renderer).width * ax.figure.dpi  # a space, in axes units
    x, y, line_height = 0.0, top, None
    for index, token in enumerate(tokens):
        highlight = span[0] <= index < span[1]
        style = dict(fontsize=fontsize, va="top", ha="left", transform=ax.transAxes)
        if highlight:
            style.update(fontweight="bold", bbox=dict(facecolor="#ffe066", edgecolor="none", pad=1.0))
        t = ax.text(x, y, token, **style)
        box = t.get_window_extent(renderer).transformed(inverse)
        line_height = line_height or 1.5 * box.height
        if box.x1 > 1.0 and x > 0:
            x, y = 0.0, y - line_height
            t.set_position((x, y))
            box = t.get_window_extent(renderer).transformed(inverse)
        x = box.x1 + space
    return y - (line_height or 0.05)


def figure4(
    sample,
    outputs: Mapping[str, tuple[str, str | None]],
    out_dir,
    profile: str,
    gold: str | None = None,
    image=None,
    max_chars: int = 1400,
    stem: str = "figure4",
    lucky: Iterable[str] = (),
) -> list[Path]:
    """One test sample: the image with the object's box, the text with the entity highlighted,
    and each model's output (``outputs``: display name -> (text, parsed label)) marked right or wrong.

    ``image`` (a PIL image) defaults to the sample's image file; long outputs are cut at ``max_chars``.
    ``lucky`` names outputs whose right label their reasoning does not support
    (``morelib.faithfulness.is_lucky``): they are framed amber and marked lucky, not correct.
    """
    from PIL import ImageDraw

    from morelib.data import box_to_pixels, load_images

    gold = gold if gold is not None else sample.label
    if image is None:
        image, _ = load_images(sample)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = box_to_pixels(sample.box, *image.size)
    line = max(2, round(min(image.size) / 100))
    # A yellow box with a black rim stands out on light and dark, red and blue objects alike.
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 0, 0), width=line + 2)
    draw.rectangle((left + 1, top + 1, right - 2, bottom - 2), outline=BOX_COLOR, width=line)

    lucky_names = set(lucky)
    unknown = lucky_names - set(outputs)
    if unknown:
        raise ValueError(f"figure4: lucky names {sorted(unknown)} are not among the outputs {list(outputs)}")
    n = max(1, len(outputs))
    fig = _new_figure(max(12, 4.6 * n), 10)
    grid = fig.add_gridspec(2, n, height_ratios=[1, 1.5], hspace=0.25, wspace=0.08)
    ax_img = fig.add_subplot(grid[0, 0])
    ax_img.imshow(image)
    ax_img.set_title(f"object: {sample.object_name} (yellow box)", fontsize=9)
    ax_img.axis("off")

    ax_txt = fig.add_subplot(grid[0, 1:] if n > 1 else grid[0, 0])
    ax_txt.axis("off")
    y = _flow_tokens(ax_txt, sample.tokens, sample.entity_span, fontsize=11)
    ax_txt.text(0, y - 0.05, f"entity: {sample.entity}  (highlighted)", fontsize=9, va="top", transform=ax_txt.transAxes)
    ax_txt.text(0, y - 0.18, f"gold label: {gold}", fontsize=11, fontweight="bold", va="top", transform=ax_txt.transAxes)
    ax_txt.text(0, y - 0.31, f"sample {sample.id}", fontsize=8, color="#555555", va="top", transform=ax_txt.transAxes)

    for column, (name, (text, label)) in enumerate(outputs.items()):
        ax = fig.add_subplot(grid[1, column])
        ax.set_xticks([])
        ax.set_yticks([])
        right_answer = label == gold
        is_lucky = right_answer and name in lucky_names
        color = "#b26a00" if is_lucky else "#1a7f37" if right_answer else "#c62828"
        for side in ax.spines.values():
            side.set_edgecolor(color)
            side.set_linewidth(2)
        mark = "✓ right, but lucky\n(its reasoning does not support it)" if is_lucky else \
            "✓ correct" if right_answer else "✗ wrong"
        ax.set_title(f"{name}\nanswer: {label if label is not None else '(unparsable)'}  {mark}", fontsize=9, color=color)
        body = text if len(text) <= max_chars else text[:max_chars].rstrip() + " …"
        # One line per step and per tag; wrapped to the panel (a mono glyph is 0.6 em wide).
        body = LINE_BREAKS.sub(lambda m: "\n" + m.group(1), body).strip()
        width_px = ax.get_window_extent(fig.canvas.get_renderer()).width
        columns = max(20, int(width_px / (0.6 * 7 * fig.dpi / 72)) - 3)
        wrapped = "\n".join(textwrap.fill(part, columns) for part in body.splitlines() if part.strip())
        ax.text(0.02, 0.98, wrapped, fontsize=7, va="top", ha="left", family="DejaVu Sans Mono", transform=ax.transAxes, clip_on=True)
    fig.suptitle(f"Figure 4 ({profile_label(profile)}): one test sample, three models", fontsize=12)
    fig.text(0.5, 0.02, textwrap.fill(profile_caption(profile), 140), ha="center", fontsize=8, style="italic")
    return save_figure(fig, out_dir, stem)


def paired_gains(predictions: Mapping[str, Sequence[dict]], baseline: str = "stage1", n_boot: int = 1000,
                 seed: int = 0, clusters: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Each model against ``baseline`` on the same samples: ``model, delta_f1, ci_low, ci_high`` in F1
    points (paired bootstrap, 95%). ``clusters`` (sample id -> image-text pair,
    ``evaluation.image_text_pairs``) resamples whole pairs instead of facts."""
    from morelib.metrics import paired_bootstrap_f1

    if baseline not in predictions:
        return pd.DataFrame(columns=["model", "delta_f1", "ci_low", "ci_high"])
    base = {r["id"]: r for r in predictions[baseline]}
    rows = []
    for key, preds in predictions.items():
        if key == baseline:
            continue
        ids = [r["id"] for r in preds if r["id"] in base]
        ours = {r["id"]: r for r in preds}
        gain = paired_bootstrap_f1([base[i]["gold"] for i in ids], [base[i]["label"] for i in ids],
                                   [ours[i]["label"] for i in ids], n=n_boot, seed=seed,
                                   clusters=[clusters[i] for i in ids] if clusters is not None else None)
        rows.append({"model": key, "delta_f1": 100 * gain["delta"], "ci_low": 100 * gain["low"],
                     "ci_high": 100 * gain["high"]})
    return pd.DataFrame(rows)


def write_csv(frame: pd.DataFrame, out_dirs: Iterable[str | Path], name: str) -> list[Path]:
    """``frame`` as ``name`` in each directory (no index)."""
    written = []
    for out_dir in out_dirs:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        frame.to_csv(Path(out_dir) / name, index=False)
        written.append(Path(out_dir) / name)
    return written


def draw_sample(ax_full, ax_crop, sample, full_title: str, crop_title: str) -> None:
    """A sample on two axes: the full image with the object's box, and the crop the model sees."""
    from matplotlib.patches import Rectangle

    from morelib.data import box_to_pixels, load_images

    full, crop = load_images(sample)
    left, top, right, bottom = box_to_pixels(sample.box, *full.size)
    ax_full.imshow(full)
    ax_full.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="black", linewidth=2))
    ax_full.set_title(full_title, fontsize=8)
    ax_crop.imshow(crop)
    ax_crop.set_title(crop_title, fontsize=8)
    for ax in (ax_full, ax_crop):
        ax.axis("off")


# ----------------------------------------------------------------------------- training curves



def plot_loss_curves(model_dirs: Mapping[str, str | Path]) -> Figure:
    """Training loss against epoch for finished models (name -> model directory)."""
    from morelib.training import is_done

    fig = _new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for name, model_dir in model_dirs.items():
        if not is_done(model_dir):
            continue
        log = training_log(model_dir)
        log = log[log["loss"].notna()] if "loss" in log else log.iloc[0:0]
        ax.plot(log["epoch"], log["loss"], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _variant_panels(grpo_dirs: Mapping[str, str | Path]) -> tuple[Figure, list]:
    """A row of panels sharing y, one per GRPO run, titled: the figure and (axes, the run's log) for
    each. Draw the curves, then ``_mark_epoch_ends``."""
    fig = _new_figure(4 * len(grpo_dirs), 3.2)
    axes = fig.subplots(1, len(grpo_dirs), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, grpo_dirs):
        ax.set_title(variant)
        ax.set_xlabel("step")
    return fig, [(ax, grpo_log(grpo_dir)) for ax, grpo_dir in zip(axes, grpo_dirs.values())]


def _mark_epoch_ends(ax, frame) -> None:
    """Grey lines between the mix epochs of a GRPO log."""
    for end in frame.groupby("mix_epoch").apply(lambda g: g.index.max()).iloc[:-1]:
        ax.axvline(end + 0.5, color="grey", linewidth=0.6)


def plot_reward_curves(grpo_dirs: Mapping[str, str | Path], smooth: int = 3) -> Figure:
    """One panel per variant: answer, format and length rewards per step (rolling mean over ``smooth``
    generation steps), with the mix-epoch boundaries in grey."""
    fig, panels = _variant_panels(grpo_dirs)
    for ax, frame in panels:
        gen = frame[frame["generated"]]
        for name, style in (("answer", "-"), ("format", "--"), ("length", ":")):
            ax.plot(gen.index, reward_curve(gen, name).rolling(smooth, min_periods=1).mean(), style, label=name)
        _mark_epoch_ends(ax, frame)
        ax.set_ylim(-0.05, 1.05)
    axes = fig.axes
    axes[0].set_ylabel("mean reward (grey: epoch ends)")
    axes[-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_learning_signal(grpo_dirs: Mapping[str, str | Path], smooth: int = 3) -> Figure:
    """One panel per variant: the share of groups with zero reward variance (no advantage, so no
    gradient) and the mean entropy of the sampled tokens per generation step (rolling mean over
    ``smooth``), with the mix-epoch boundaries in grey. A run whose groups all agree learns nothing."""
    fig, panels = _variant_panels(grpo_dirs)
    top = 1.05
    for ax, frame in panels:
        gen = frame[frame["generated"]]
        for column, name, style in (("frac_reward_zero_std", "zero-variance groups", "-"), ("entropy", "entropy", "--")):
            if column in gen:
                curve = gen[column].rolling(smooth, min_periods=1).mean()
                ax.plot(gen.index, curve, style, label=name)
                top = max(top, float(curve.max()) * 1.05)
        _mark_epoch_ends(ax, frame)
    axes = fig.axes
    axes[0].set_ylim(-0.05, top)
    axes[0].set_ylabel("share / nats (grey: epoch ends)")
    axes[-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
