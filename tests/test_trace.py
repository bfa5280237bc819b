"""The traced pair (morelib.trace): a deterministic choice that follows one picture from the Stage 1
quarter into the Stage 2 pool, the trace file, and GRPO advantages that match TRL's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morelib import cases, grpo_group, report, trace, trace_view
from morelib.data import Sample
from morelib.files import FileFormatError
from morelib.layout import RunLayout

REL = "/per/loc/place_of_birth"


def fact(line: int, label: str, img: str, entity: str = "Mount Selen", obj: str = "obj_0") -> Sample:
    """One fact of the image-text pair ``img``: every fact of a pair shares its image and headline."""
    tokens = (img, "was", "born", "in", "Mount", "Selen", "and", "hails", "from", "Lake", "Ebon")
    span = (4, 6) if entity == "Mount Selen" else (9, 11)
    return Sample(id=f"train-{line}", split="train", text=" ".join(tokens), tokens=tokens, entity=entity,
                  entity_span=span, object_name=obj, box=(0.5, 0.5, 0.2, 0.2), img_id=f"{img}.jpg",
                  image_path=Path(f"{img}.jpg"), label=label)


# Pair "a": a relation in Stage 1 whose siblings in the pool are a bystander (none) and the subject
# with another entity (a relation). Pair "b": a relation in Stage 1 with no sibling in the pool.
# Pair "c": a relation in Stage 1 (first in data order) whose only pool sibling is a none.
SAMPLES = [
    fact(2, REL, "c"), fact(3, "none", "c", obj="obj_1"),
    fact(10, REL, "a"), fact(11, "none", "a", obj="obj_1"), fact(12, REL, "a", entity="Lake Ebon"),
    fact(20, REL, "b"), fact(21, "none", "x"), fact(22, REL, "y"),
]
STAGE1 = ["train-2", "train-10", "train-20"]
POOL = ["train-3", "train-11", "train-12", "train-21", "train-22"]


def test_default_choice_follows_one_picture_and_prefers_a_relation_in_the_pool():
    chosen = trace.choose(SAMPLES, STAGE1, POOL)
    # train-2 comes first but its only pool sibling is none; pair "a" offers a relation sibling.
    assert (chosen.stage1_id, chosen.pool_id) == ("train-10", "train-12")
    assert chosen.ids == ["train-10", "train-12"]
    assert "image and headline" in chosen.how
    # The choice ignores the order the ids come in.
    assert trace.choose(list(reversed(SAMPLES)), list(reversed(STAGE1)), list(reversed(POOL))) == chosen


def test_a_none_sibling_is_taken_when_no_pair_offers_a_relation():
    samples = [s for s in SAMPLES if s.id != "train-12"]
    pool = [i for i in POOL if i != "train-12"]
    chosen = trace.choose(samples, STAGE1, pool)
    assert (chosen.stage1_id, chosen.pool_id) == ("train-2", "train-3")


def test_without_shared_pairs_each_part_gives_its_first_relation():
    chosen = trace.choose(SAMPLES, ["train-20"], ["train-21", "train-22"])
    assert (chosen.stage1_id, chosen.pool_id) == ("train-20", "train-22")
    assert "no image-text pair is shared" in chosen.how


def test_trace_id_takes_the_role_of_its_part():
    from_pool = trace.choose(SAMPLES, STAGE1, POOL, trace_id="train-11")
    assert (from_pool.stage1_id, from_pool.pool_id) == ("train-10", "train-11")
    assert "trace_id" in from_pool.how
    from_stage1 = trace.choose(SAMPLES, STAGE1, POOL, trace_id="train-20")
    assert (from_stage1.stage1_id, from_stage1.pool_id) == ("train-20", "train-12")  # no sibling: first relation
    with pytest.raises(ValueError, match=r"trace_id 'test-3': not a fact of the training split"):
        trace.choose(SAMPLES, STAGE1, POOL, trace_id="test-3")
    with pytest.raises(ValueError, match="in neither"):
        trace.choose(SAMPLES, ["train-10"], ["train-11"], trace_id="train-12")


def test_ids_sort_in_data_order():
    assert sorted(["train-10", "train-2", "train-1"], key=trace.id_key) == ["train-1", "train-2", "train-10"]


def test_trace_file_round_trip_and_errors(tmp_path):
    assert trace.load(tmp_path) is None  # a notebook run alone, before 00
    chosen = trace.choose(SAMPLES, STAGE1, POOL)
    path = trace.write(tmp_path, chosen)
    assert path == RunLayout(tmp_path).trace
    assert trace.load(tmp_path) == chosen
    path.write_text(json.dumps({"stage1_id": "train-1", "pool_id": 7, "how": "x"}))
    with pytest.raises(FileFormatError, match=r"trace\.json: field 'pool_id'"):
        trace.load(tmp_path)


def test_load_samples_and_describe(toy_world):
    train = toy_world.samples("train")
    loaded = trace_view.load_samples(toy_world.data_dir, [train[3].id, train[0].id])
    assert loaded == {train[3].id: train[3], train[0].id: train[0]}
    from morelib import toy

    facts = toy.meta_by_id(toy_world.data_dir)[train[0].id]
    text = trace_view.describe(train[0], facts)
    assert f"[[ {train[0].entity} ]]" in text and facts["object"]["colour"] in text
    with pytest.raises(ValueError, match="train-99999"):
        trace_view.load_samples(toy_world.data_dir, ["train-99999"])


@pytest.mark.parametrize("rewards", [[3, 2, 2, 0], [1, 0, 0, 0, 1, 1, 0, 1], [2.5, 2.5, 0.5, 1.0]])
def test_numpy_advantages_match_trls_lines(rewards):
    ours = grpo_group.group_advantages(rewards)
    theirs = grpo_group.trl_group_advantages(rewards, len(rewards))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert abs(ours.sum()) < 1e-6  # a group's advantages cancel out


def test_advantages_use_the_sample_std_and_leave_equal_groups_at_zero():
    # mean 1.75, squared deviations sum to 4.75: the sample std is sqrt(4.75 / 3), not sqrt(4.75 / 4).
    expected = (np.array([3, 2, 2, 0]) - 1.75) / (np.sqrt(4.75 / 3) + 1e-4)
    np.testing.assert_allclose(grpo_group.group_advantages([3, 2, 2, 0]), expected)
    np.testing.assert_array_equal(grpo_group.group_advantages([3, 3, 3, 3]), np.zeros(4))
    np.testing.assert_array_equal(grpo_group.trl_group_advantages([1, 1, 0, 0, 2, 2, 2, 2], 4)[4:], np.zeros(4))
    # Two groups are normalised separately.
    two = grpo_group.group_advantages([1, 0, 0, 0, 3, 2, 2, 2], num_generations=4)
    np.testing.assert_allclose(two[:4], two[4:])
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_group.group_advantages([1, 0, 0, 0], num_generations=3)


def test_score_group_gives_rewards_total_and_advantages():
    from morelib.config import load_settings

    grpo = load_settings("05_grpo", "toy", ["length_threshold=40", "reward_weights=[1.0, 0.5, 2.0]"])
    steps = " ".join(f"Step {i}: x." for i in range(1, 7))
    completions = [f"<think> {steps} </think> <answer>{REL}</answer>", f"<think> {steps} </think> <answer>none</answer>",
                   REL, "no idea"]
    table = grpo_group.score_group(completions, REL, grpo)
    assert table["label"].tolist() == [REL, "none", REL, None]
    assert table[["format", "length", "answer"]].values.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert table["reward"].tolist() == [3.5, 1.5, 2.0, 0.0]  # 1 * format + 0.5 * length + 2 * answer
    np.testing.assert_allclose(table["advantage"], grpo_group.group_advantages([3.5, 1.5, 2.0, 0.0]))
    np.testing.assert_allclose(table["advantage"], table["advantage (TRL)"], atol=1e-5)


def test_group_generation_follows_the_grpo_settings():
    from morelib.config import load_settings

    grpo = load_settings("05_grpo", "toy", ["temperature=0.7", "top_p=0.8", "max_completion_length=99",
                                            "num_generations=4", "seed=5"])
    decoding = grpo_group.group_generation_settings(grpo)
    assert (decoding.temperature, decoding.top_p, decoding.max_new_tokens, decoding.batch_size, decoding.seed) == \
        (0.7, 0.8, 99, 4, 5)

    class Recorder:
        def generate(self, samples, settings, template=None):
            from morelib.inference import Generation

            self.samples, self.settings = samples, settings
            return [Generation(text=f"c{i}", prompt_tokens=1, completion_tokens=1) for i in range(len(samples))]

    backend = Recorder()
    assert grpo_group.sample_group(backend, SAMPLES[0], grpo) == ["c0", "c1", "c2", "c3"]
    assert backend.samples == [SAMPLES[0]] * 4 and backend.settings.temperature == 0.7


def test_mix_epochs_and_difficulty_row(tmp_path):
    assert trace_view.mix_epochs([["a", "b"], ["b"], ["c"]], "b") == [1, 2]
    assert trace_view.difficulty_row(tmp_path, "train-1") is None  # no split yet
    from morelib.difficulty import write_split

    write_split([{"id": "train-1", "label": REL, "pred": None, "difficulty": "hard"}], RunLayout(tmp_path).difficulty_split)
    assert trace_view.difficulty_row(tmp_path, "train-1")["difficulty"] == "hard"
    assert trace_view.difficulty_row(tmp_path, "train-2") is None


def test_side_by_side_escapes_and_has_a_text_form():
    shown = trace_view.side_by_side("left <a>", "x < y", "right", "<answer>none</answer>")
    assert "&lt;answer&gt;" in shown.data and "x &lt; y" in shown.data
    assert "<answer>none</answer>" in repr(shown)


# Figure 4's choice and marks (morelib.cases.pick_case / figure4, which take the faithfulness checks).
PREDS = {
    "sft_label_full": {"s1": "none", "s2": "/a", "s3": "/b"},
    "stage1": {"s1": "none", "s2": "/b", "s3": "/b"},
    "grpo_progressive": {"s1": "none", "s2": "/a", "s3": "/a"},
}
GOLD = {"s1": "none", "s2": "/a", "s3": "/a"}


def test_pick_case_puts_a_supported_answer_first():
    # Without checks: s3 (both others wrong) beats s2 (label-only SFT also right).
    assert cases.pick_case(PREDS, GOLD) == "s3"
    # MORE-R1's reasoning supports its answer only in s2: s2 wins, even over disagreement elsewhere.
    assert cases.pick_case(PREDS, GOLD, supported={"s2": True, "s3": False}) == "s2"
    # A supported case where every model agrees still beats an unsupported disagreement.
    assert cases.pick_case(PREDS, GOLD, supported={"s1": True}) == "s1"
    # Nothing supported: the old ranking.
    assert cases.pick_case(PREDS, GOLD, supported={"s2": False, "s3": None}) == "s3"


def test_figure4_marks_lucky_answers(tmp_path):
    from PIL import Image

    tokens = ("Anna", "Berg", "joins", "Nordic", "Club")
    sample = Sample(id="test-1", split="test", text=" ".join(tokens), tokens=tokens, entity="Nordic Club",
                    entity_span=(3, 5), object_name="obj_0", box=(0.5, 0.5, 0.4, 0.4), img_id="x.jpg",
                    image_path=tmp_path / "x.jpg", label="/per/org/member_of")
    outputs = {"MORE-R1": ("<think> Step 6: none. </think> <answer>/per/org/member_of</answer>", "/per/org/member_of")}
    image = Image.new("RGB", (112, 112), (240, 240, 240))
    plain = report.figure4(sample, outputs, tmp_path / "plain", "toy", image=image)
    marked = report.figure4(sample, outputs, tmp_path / "lucky", "toy", image=image, lucky=["MORE-R1"])
    assert plain[0].read_bytes() != marked[0].read_bytes()

    def amber(path):  # the lucky frame's colour, #b26a00
        with Image.open(path) as img:
            return sum(1 for r, g, b in img.convert("RGB").get_flattened_data() if abs(r - 178) < 12 and abs(g - 106) < 12 and b < 20)

    assert amber(marked[0]) > 100 and amber(plain[0]) == 0
    with pytest.raises(ValueError, match="lucky names"):
        report.figure4(sample, outputs, tmp_path, "toy", image=image, lucky=["Stage 1"])
