"""The paper's reported numbers (Table 1 of MORE-R1), as data.

Values are percentages on the MORE test set (3,036 samples), copied from the paper's Table 1
(also in docs/paper-notes.md, "Table 1 as reported"). The zero-shot rows are themselves
reported by REMOTE.
"""

from __future__ import annotations

CLASSIFICATION = "Classification-based"
GENERATION_NO_REASONING = "Generation-based (no reasoning)"
GENERATION_REASONING = "Generation-based (with reasoning)"
GROUPS: tuple[str, ...] = (CLASSIFICATION, GENERATION_NO_REASONING, GENERATION_REASONING)

METRICS: tuple[str, ...] = ("acc", "precision", "recall", "f1")

# (group, model, acc, precision, recall, f1), in the paper's row order.
_TABLE1 = [
    (CLASSIFICATION, "IFAformer", 79.28, 55.13, 54.24, 54.68),
    (CLASSIFICATION, "MOREformer", 83.50, 62.18, 63.34, 62.75),
    (CLASSIFICATION, "HVFormer", 82.31, 58.81, 62.84, 60.76),
    (CLASSIFICATION, "MMIB", 82.41, 60.15, 62.28, 61.17),
    (CLASSIFICATION, "CGI-MRE", 81.92, 57.44, 63.01, 60.09),
    (CLASSIFICATION, "FocalMRE", 82.44, 60.75, 62.89, 61.81),
    (CLASSIFICATION, "REMOTE", 83.64, 63.21, 64.63, 63.91),
    (GENERATION_NO_REASONING, "LLaMA3.2-Vision-11B(-zs)", 6.69, 5.09, 18.66, 8.01),
    (GENERATION_NO_REASONING, "Qwen2.5-VL-7B(-zs)", 23.94, 25.81, 23.95, 24.84),
    (GENERATION_NO_REASONING, "Qwen2.5-VL-SFT", 82.64, 55.08, 64.84, 59.56),
    (GENERATION_NO_REASONING, "Qwen2.5-VL-SFT(25%)", 80.20, 51.85, 54.11, 52.96),
    (GENERATION_REASONING, "MORE-R1(Stage 1)", 83.33, 62.53, 62.84, 62.69),
    (GENERATION_REASONING, "MORE-R1", 84.91, 65.88, 69.83, 67.80),
]

TABLE1: list[dict] = [dict(zip(("group", "model", *METRICS), row)) for row in _TABLE1]
