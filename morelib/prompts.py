"""Prompts shown to the student model (Stage 1 SFT, inference, GRPO).

The student sees only the paper's "basic task description" plus the two images (full image,
object crop). The expert's three-part prompt builds on the same description (see
``morelib.annotate``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from morelib.labels import RELATIONS

TEMPLATES = Path(__file__).parent / "templates"
TASK_TEMPLATE_PATH = TEMPLATES / "task_description.txt"
# The student prompts: "reasoning" (think in six steps, then answer; MORE-R1) and "label" (answer
# with the label only; the paper's zero-shot and label-only SFT baselines output the label directly).
PROMPTS = {"reasoning": TASK_TEMPLATE_PATH, "label": TEMPLATES / "label_task_description.txt"}


def prompt_template(kind: str) -> str:
    """The text of the student prompt ``kind`` (``reasoning`` or ``label``)."""
    if kind not in PROMPTS:
        raise ValueError(f"prompt {kind!r}: expected one of {tuple(PROMPTS)}")
    return PROMPTS[kind].read_text()


def read_template(path: str | Path | None, default: Path) -> str:
    return Path(path or default).read_text()


def task_description(sample, template: str | None = None, relations: tuple[str, ...] = RELATIONS) -> str:
    """The basic task description filled in for one sample."""
    template = template if template is not None else TASK_TEMPLATE_PATH.read_text()
    return template.format(text=sample.text, entity=sample.entity, labels=", ".join(relations)).strip()


def user_turn(prompt_text: str) -> dict:
    """One user message holding two image placeholders (full image, crop) and the text.

    The number of image placeholders must equal the number of images passed with the row.
    """
    return {
        "role": "user",
        "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": prompt_text}],
    }


def student_prompt(sample, template: str | None = None) -> list[dict]:
    """The conversational prompt (a list of messages) the student model answers."""
    return [user_turn(task_description(sample, template))]


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
