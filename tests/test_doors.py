"""Settings reach the code through one door each: ``morelib.rewards.get_reward_funcs(settings)`` turns
the GRPO settings into reward functions, ``morelib.inference.backend_for(settings, model)`` turns the
inference settings into a backend. No notebook, module or benchmark unpacks those settings field
by field on the way (a copy drifts: notebook 05's once lost ``answer_requires_format``)."""

import ast
from pathlib import Path

import pytest

from morelib.layout import repo_root

ROOT = repo_root()
SOURCES = sorted([*ROOT.glob("morelib/*.py"), *ROOT.glob("notebooks/*.py"), *ROOT.glob("benchmarks/*.py")])

# Names that build a reward or a backend from loose options: only the door's own module uses them.
BUILDERS = {
    "morelib/rewards.py": {"REWARDS", "make_length_reward", "make_answer_reward"},
    "morelib/inference.py": {"make_backend", "from_path", "VLLMBackend", "OpenAIBackend", "SubprocessBackend"},
}
# Settings fields that only the doors read (settings.py and training_settings.py declare them;
# preflight derives the vLLM context length before any backend exists).
DOOR_FIELDS = {"length_requires_format", "answer_requires_format", "reward_weights",
               "vllm_max_model_len", "vllm_gpu_memory_utilization", "served_model_name"}
FIELD_READERS = {"morelib/rewards.py", "morelib/inference.py", "morelib/settings.py", "morelib/training_settings.py",
                 "morelib/preflight.py"}


def used_names(tree: ast.AST):
    """(line, name) of every name and attribute the code uses (docstrings and comments are not code)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name.rsplit(".", 1)[-1]


def door_violations(relative: str, source: str) -> list[str]:
    found = []
    for line, name in used_names(ast.parse(source)):
        for owner, names in BUILDERS.items():
            if name in names and relative != owner:
                found.append(f"{relative}:{line}: {name} (use the door in {owner})")
        if name in DOOR_FIELDS and relative not in FIELD_READERS:
            found.append(f"{relative}:{line}: reads .{name} (pass the settings object to its door)")
    return found


def test_the_sources_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"morelib/grpo.py", "morelib/trace.py", "notebooks/05_grpo.py", "notebooks/04_difficulty.py",
            "benchmarks/gpu_rehearsal.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_source_unpacks_reward_or_backend_settings(path: Path):
    relative = path.relative_to(ROOT).as_posix()
    assert door_violations(relative, path.read_text()) == []


def test_the_check_catches_settings_unpacked_by_hand():
    """What the check exists for: the call sites as they were before the doors."""
    by_hand = ("rewards = get_reward_funcs(settings.reward_names, min_chars=settings.length_threshold,\n"
               "                           answer_requires_format=settings.answer_requires_format)\n"
               "model = make_backend(path, gen.backend, max_model_len=gen.vllm_max_model_len)\n"
               "policy = TransformersBackend.from_path(path, dtype=gen.dtype)\n"
               "from morelib.rewards import make_length_reward\n")
    found = door_violations("notebooks/05_grpo.py", by_hand)
    assert any(":2: reads .answer_requires_format" in f for f in found)
    assert any(":3: make_backend" in f for f in found) and any(":3: reads .vllm_max_model_len" in f for f in found)
    assert any(":4: from_path" in f for f in found) and any(":5: make_length_reward" in f for f in found)
    # The doors themselves may.
    assert door_violations("morelib/inference.py", "make_backend(m, max_model_len=s.vllm_max_model_len)") == []


def test_the_reward_door_configures_every_reward_from_the_settings():
    """Each reward option reaches its reward: change the setting, the reward changes."""
    from morelib.rewards import REWARD_OPTIONS, get_reward_funcs, total_reward
    from morelib.training_settings import GRPOSettings

    steps = " ".join(f"Step {i}: ..." for i in range(1, 7))
    good = f"<think> {steps} </think> <answer>none</answer>"
    bare = "none"
    assert set(REWARD_OPTIONS) <= {f for f in GRPOSettings.__dataclass_fields__}
    plain = GRPOSettings(reward_names=["format", "length", "answer"], length_threshold=10)
    guarded = GRPOSettings(reward_names=["format", "length", "answer"], length_threshold=10,
                           length_requires_format=True, answer_requires_format=True, reward_weights=[1.0, 2.0, 4.0])
    texts = [good, bare + " " * 20]
    assert [f(texts, label=["none"] * 2) for f in get_reward_funcs(plain)] == [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert [f(texts, label=["none"] * 2) for f in get_reward_funcs(guarded)] == [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    assert total_reward(texts, ["none"] * 2, guarded) == [7.0, 0.0]
    assert [f.__doc__ for f in get_reward_funcs(GRPOSettings(length_threshold=77), ["length"])] == [
        "1.0 when longer than 77 characters (require_format=False)."]


def test_the_backend_door_passes_every_inference_setting(tmp_path):
    """backend_for hands the backend, dtype, server, served name, pixels and vLLM options on, renamed once."""
    from morelib.inference import GenerationSettings, OpenAIBackend, SubprocessBackend, backend_for

    settings = GenerationSettings(backend="vllm", dtype="bfloat16", min_pixels=3136, max_pixels=12544,
                                  vllm_max_model_len=4096, vllm_gpu_memory_utilization=0.5)
    child = backend_for(settings, tmp_path / "model", device="cuda")
    assert child == SubprocessBackend(str(tmp_path / "model"), "vllm", dtype="bfloat16", device="cuda",
                                      max_model_len=4096, min_pixels=3136, max_pixels=12544,
                                      gpu_memory_utilization=0.5)
    served = backend_for(GenerationSettings(backend="openai", base_url="http://localhost:1/v1",
                                            served_model_names={"stage1": "s1"}).for_model("stage1"), "ckpt/stage1")
    assert isinstance(served, OpenAIBackend) and served.model == "s1"
    with pytest.raises(ValueError, match="needs base_url"):
        backend_for(GenerationSettings(backend="openai"), "m")


def test_the_backend_door_gives_transformers_the_pixel_limits_and_dtype(toy_world):
    from morelib.inference import GenerationSettings, TransformersBackend, backend_for
    from morelib.vision_tokens import PixelLimits, processor_limits

    settings = GenerationSettings(backend="vllm", dtype="bfloat16", min_pixels=8 * 28 * 28, max_pixels=20 * 28 * 28)
    local = backend_for(settings, toy_world.model_dir, backend="transformers", device="cpu")  # one fact, in process
    assert isinstance(local, TransformersBackend)
    assert processor_limits(local.processor) == PixelLimits(8 * 28 * 28, 20 * 28 * 28)
    assert str(local.model.dtype) == "torch.bfloat16"
