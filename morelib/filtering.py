"""The paper's regex filter: keep an expert response only if it is well formed and right.

A response is kept when it is ``<think> Step 1: .. Step 6: </think> <answer>LABEL</answer>``
with the six steps once each and in order, nothing outside the two blocks, and LABEL equal
to the gold label after forgiving case, whitespace and a missing leading slash. The final
gate is ``morelib.answer.is_well_formed`` plus ``parse_label == gold``, the same parser the
format reward and the evaluation use; the checks before it only name *why* a response fails.

Every rejected response gets one reason, the first that applies, in this order:

- ``no_response``: the sample has no record in the store;
- ``error``: the request ended in an error (see the record's ``error``);
- ``empty_response``: the reply has no text;
- ``missing_think``: no ``<think>`` ... ``</think>`` pair;
- ``several_thinks``: more than one think tag of a kind;
- ``missing_answer``: no complete ``<answer>`` ... ``</answer>`` pair;
- ``several_answers``: more than one answer tag of a kind;
- ``bad_structure``: text before ``<think>`` or after ``</answer>``, or the blocks in the wrong order;
- ``missing_step``: a step number of 1..6 is absent;
- ``steps_out_of_order``: the steps are repeated, misordered, or there are extra steps;
- ``unknown_label``: the answer is not one of the labels;
- ``wrong_answer``: the answer is a label but not the gold one;
- ``malformed``: anything else the strict parser refuses.

The kept responses become the Stage 1 set (``RunLayout.stage1_set``, ``sft/stage1.jsonl``), rows
``{"id", "label", "completion"}``,
with the answer written in its canonical form; the SFT stage rebuilds the student prompt
(the basic task description and the two images) from the sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from morelib.expert_store import ResponseStore, latest_records
from morelib.splits import read_split_ids
from morelib.answer import STEP_RE, STRICT_FORMAT_RE, is_well_formed, parse_label
from morelib.files import read_jsonl, write_jsonl
from morelib.labels import RELATIONS, normalize_label
from morelib.layout import RunLayout, resolve_path

REASONS = ("no_response", "error", "empty_response", "missing_think", "several_thinks", "missing_answer",
           "several_answers", "bad_structure", "missing_step", "steps_out_of_order", "unknown_label",
           "wrong_answer", "malformed")
N_STEPS = 6


def check_response(text: str | None, gold: str, n_steps: int = N_STEPS,
                   relations: tuple[str, ...] = RELATIONS) -> tuple[str | None, str | None]:
    """(reason, completion): reason is None for a kept response, whose canonical text is returned."""
    if text is None or not text.strip():
        return "empty_response", None
    opens, closes = text.count("<think>"), text.count("</think>")
    if opens == 0 or closes == 0:
        return "missing_think", None
    if opens > 1 or closes > 1:
        return "several_thinks", None
    opens, closes = text.count("<answer>"), text.count("</answer>")
    if opens > 1 or closes > 1:
        return "several_answers", None
    if opens == 0 or closes == 0:
        return "missing_answer", None
    m = STRICT_FORMAT_RE.match(text)
    if m is None:
        return "bad_structure", None
    numbers = [int(n) for n in STEP_RE.findall(m["think"])]
    if numbers != list(range(1, n_steps + 1)):
        missing = set(range(1, n_steps + 1)) - set(numbers)
        return ("missing_step" if missing else "steps_out_of_order"), None
    label = normalize_label(m["answer"], relations)
    if label is None:
        return "unknown_label", None
    if label != gold:
        return "wrong_answer", None
    completion = (text[: m.start("answer")] + label + text[m.end("answer"):]).strip()
    # The shared parser has the last word: what it refuses is never kept.
    if not is_well_formed(completion, n_steps, relations) or parse_label(completion, relations) != gold:
        return "malformed", None
    return None, completion


@dataclass
class FilterResult:
    id: str
    label: str  # the gold label
    reason: str | None  # None = kept
    completion: str | None  # the kept text (canonical answer), else None
    response: str | None  # the expert's raw reply (or the error, for reason "error")

    @property
    def kept(self) -> bool:
        return self.reason is None


def filter_records(samples, records: dict[str, dict], relations: tuple[str, ...] = RELATIONS) -> list[FilterResult]:
    """One result per sample, from its chosen store record (see ``expert_store.latest_records``)."""
    results = []
    for s in samples:
        record = records.get(s.id)
        if record is None:
            results.append(FilterResult(s.id, s.label, "no_response", None, None))
        elif record.get("error") and record.get("response") is None:
            results.append(FilterResult(s.id, s.label, "error", None, record["error"]))
        else:
            reason, completion = check_response(record.get("response"), s.label, relations=relations)
            results.append(FilterResult(s.id, s.label, reason, completion, record.get("response")))
    return results




def rejected_path(stage1_set: str | Path) -> Path:
    """Where the rejected responses go: beside the Stage 1 set (``sft/stage1.jsonl``), for inspection."""
    return RunLayout(Path(stage1_set).parent.parent).stage1_rejected


def build_stage1(run_dir: RunLayout | str | Path, data_dir: str | Path, split: str = "train", model: str | None = None,
                 ) -> list[FilterResult]:
    """Filter the Stage 1 sample's expert responses; write the Stage 1 set and the rejects.

    ``model`` keeps only that model's records (None = whichever model answered last). The
    kept rows go to ``RunLayout.stage1_set``; the rejects (``id, label, reason, response``)
    beside it, to ``stage1_rejected.jsonl``, for inspection.
    """
    from morelib.data import load_split

    layout = RunLayout(run_dir)
    stage1 = read_split_ids(run_dir)["stage1"]
    by_id = {s.id: s for s in load_split(resolve_path(data_dir), split)}
    unknown = [i for i in stage1 if i not in by_id]
    if unknown:
        raise ValueError(f"{layout.split_ids}: field 'stage1': ids not in the {split} split "
                         f"of {data_dir}: {unknown[:5]}")
    samples = [by_id[i] for i in stage1]
    records = latest_records(ResponseStore.for_run(run_dir), stage1, model)
    results = filter_records(samples, records)
    write_jsonl(layout.stage1_set, ({"id": r.id, "label": r.label, "completion": r.completion}
                                    for r in results if r.kept))
    write_jsonl(layout.stage1_rejected,
                ({"id": r.id, "label": r.label, "reason": r.reason, "response": r.response}
                 for r in results if not r.kept))
    return results


STAGE1_FIELDS = ("id", "label", "completion")


def read_stage1(path: str | Path, required: tuple[str, ...] = STAGE1_FIELDS) -> list[dict]:
    """The rows of a Stage 1 set file (``RunLayout.stage1_set``), each of the ``required`` fields a
    string; SFT asks for ``id`` and ``completion`` only."""
    def check(row: dict) -> None:
        for name in required:
            if not isinstance(row[name], str):
                raise ValueError(f"field {name!r}: expected a string, got {row[name]!r}")

    return read_jsonl(path, required=required, check=check)


def reason_counts(results: list[FilterResult]) -> Counter:
    """``kept`` and each rejection reason, counted."""
    return Counter("kept" if r.kept else r.reason for r in results)


def label_table(results: list[FilterResult]):
    """A pandas table: one row per gold label, columns sent, kept, keep rate and each reason seen."""
    import pandas as pd

    outcomes = pd.DataFrame({"label": [r.label for r in results],
                             "outcome": ["kept" if r.kept else r.reason for r in results]})
    table = pd.crosstab(outcomes["label"], outcomes["outcome"])
    if "kept" not in table:
        table["kept"] = 0
    table["sent"] = table.sum(axis=1)
    table["keep_rate"] = (table["kept"] / table["sent"]).round(3)
    columns = ["sent", "kept", "keep_rate"] + [r for r in REASONS if r in table]
    return table.loc[[r for r in RELATIONS if r in table.index], columns]
