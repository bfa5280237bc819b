"""The expert's requests for Stage 1: the paper's three-part expert prompt (task description, six
stepwise instructions, the gold answer) from one replaceable template file, the messages it goes
in (the full image, the object crop, the text: the student's order), and the requests of a run
(the Stage 1 sample, each request identified by the hash of its content)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

from morelib.labels import NONE, RELATIONS, relation_types
from morelib.layout import resolve_path
from morelib.prompts import TEMPLATES, task_description, text_hash
from morelib.settings import AnnotationSettings
from morelib.splits import stratified_split, write_split_ids

EXPERT_TEMPLATE_PATH = TEMPLATES / "expert_prompt.txt"
TEMPLATE_FIELDS = ("task_description", "text", "entity", "labels", "gold_statement", "gold_label",
                   "object_type", "entity_type")


def read_expert_template(template_path: str | Path | None = None) -> str:
    return resolve_path(template_path).read_text() if template_path else EXPERT_TEMPLATE_PATH.read_text()


def gold_statement(sample) -> str:
    """The paper's "actual answer" part: gold types and relation, or that there is none."""
    if sample.label == NONE:
        return (f'For your reference, the correct answer: there is no relation between the object '
                f'and the entity "{sample.entity}", so the relation is none.')
    obj_type, ent_type = relation_types(sample.label)
    return (f'For your reference, the correct answer: the object is of type {obj_type}, the entity '
            f'"{sample.entity}" is of type {ent_type}, and their relation is {sample.label}.')


def expert_prompt_text(sample, template: str | None = None, template_name: str = "expert template",
                       relations: tuple[str, ...] = RELATIONS) -> str:
    """The expert's text prompt for one sample; placeholders are the names in ``TEMPLATE_FIELDS``."""
    template = template if template is not None else EXPERT_TEMPLATE_PATH.read_text()
    types = relation_types(sample.label) if sample.label != NONE else None
    values = {
        "task_description": task_description(sample, relations=relations),
        "text": sample.text,
        "entity": sample.entity,
        "labels": ", ".join(relations),
        "gold_statement": gold_statement(sample),
        "gold_label": sample.label,
        "object_type": types[0] if types else "",
        "entity_type": types[1] if types else "",
    }
    try:
        return template.format(**values).strip()
    except KeyError as exc:
        raise ValueError(f"{template_name}: unknown placeholder {exc}; available: {', '.join(TEMPLATE_FIELDS)} "
                         "(write literal braces as {{ }})") from None


def prompt_hash(prompt_text: str, sample, detail: str) -> str:
    """Identifies one request's content: text, image identity (file, box) and detail level."""
    return text_hash(json.dumps([prompt_text, sample.img_id, list(sample.box), detail]))


def image_data_url(image, quality: int = 90) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def expert_messages(prompt_text: str, images, detail: str) -> list[dict]:
    """One user turn: the full image, the object crop, then the text (the student's order)."""
    parts = [{"type": "image_url", "image_url": {"url": image_data_url(im), "detail": detail}} for im in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": prompt_text}]}]


@dataclass
class ExpertRequest:
    sample: object
    prompt_text: str
    prompt_hash: str

    @property
    def sample_id(self) -> str:
        return self.sample.id


def plan_requests(samples, cfg: AnnotationSettings) -> list[ExpertRequest]:
    template = read_expert_template(cfg.template_path)
    name = str(cfg.template_path or EXPERT_TEMPLATE_PATH)
    requests = []
    for s in samples:
        text = expert_prompt_text(s, template, name)
        requests.append(ExpertRequest(s, text, prompt_hash(text, s, cfg.image_detail)))
    return requests


def request_body(req: ExpertRequest, cfg: AnnotationSettings, load_images) -> dict:
    body = {"model": cfg.model, "messages": expert_messages(req.prompt_text, load_images(req.sample), cfg.image_detail),
            "max_tokens": cfg.max_tokens}
    if cfg.temperature is not None:
        body["temperature"] = cfg.temperature
    return body


def load_train(cfg: AnnotationSettings):
    """The split to sample from; ``morelib.data`` refuses an empty one, naming the file."""
    from morelib.data import load_split

    return load_split(resolve_path(cfg.data_dir), cfg.split)


def prepare(cfg: AnnotationSettings, samples=None) -> list[ExpertRequest]:
    """Sample Stage 1, write the split ids, and build its expert requests (no call is made)."""
    samples = load_train(cfg) if samples is None else samples
    if not samples:
        raise ValueError(f"split {cfg.split!r} of {cfg.data_dir} has no facts; nothing to annotate")
    stage1, pool = stratified_split(samples, cfg.fraction, cfg.seed)
    write_split_ids(cfg.run_dir, stage1, pool)
    chosen = set(stage1)
    return plan_requests([s for s in samples if s.id in chosen], cfg)
