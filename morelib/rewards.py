"""Stage 2 rewards: format, length and answer, each with TRL's reward signature.

TRL's GRPOTrainer calls every reward function as ``f(prompts=..., completions=..., **columns)``
and logs it under its ``__name__``; each returns one float per completion. A completion is a
plain string, or (conversational data) a list of messages whose ``content`` is a string or a
list of ``{"type": "text", "text": ...}`` parts. The gold label arrives as the ``label`` column.

The paper's rewards (docs/paper-notes.md, "Stage 2"):

- format: 1 when the output is ``<think> Step 1: .. Step 6: .. </think> <answer>LABEL</answer>``
  with LABEL one of the 21 labels, nothing after it (``morelib.answer.is_well_formed``);
- length: 1 when the output is longer than 1,024 characters;
- answer: 1 when the parsed label equals the gold label (``morelib.answer.parse_label``, the
  same parser inference uses, so training and evaluation read answers identically).

The paper combines them in its Eq. 5, lost in extraction; a plain sum is **inferred**, so the
weights are parameters (TRL: ``GRPOConfig.reward_weights``; here ``total_reward``).

Guards against reward hacking are named options, off by default (paper behaviour):

- ``require_format`` on the length reward: pay for length only when the output is well formed,
  so padding after ``</answer>`` or rambling without structure earns nothing;
- ``require_format`` on the answer reward: pay for the right label only inside the format.

Four rewards beyond the paper, off unless named in ``reward_names``:

- consistency: 1 when Step 6 concludes the label of the answer tag
  (``morelib.faithfulness.step6_agrees``). Format and answer rewards do not check that the
  answer follows from the reasoning; on the toy, a long GRPO run let the two drift apart
  (``docs/stage2-on-the-toy.md``).
- quotes: 1 when every phrase the reasoning puts in double quotes occurs in the news text (the
  ``source_text`` column; ``morelib.faithfulness.quotes_in_text``), so a reasoning that quotes
  nothing passes. The answer reward also pays a right label reached from a misquoted text; on the
  toy most wrong answers follow a misquoted cue. But it can be earned by quoting nothing: on
  the toy-full valid split, a progressive run with it stopped quoting and answered ``none`` to 298
  of 300 facts (row q1 of ``docs/stage2-on-the-toy.md``). Use it with that in mind.
- entity: 1 when Steps 2, 4 and 6 each name the queried entity (the ``entity`` column;
  ``morelib.faithfulness.names_entity``). On the toy, Stage 1 names another entity of the
  headline in most of its reasoning, also where its answer is right, and the answer reward pays
  that reasoning all the same. The reward cannot be earned by leaving steps out: each of the three
  must be there and name the entity. On the toy-full valid split, 430 GRPO steps with it did not
  teach it (rows e1 and e2 of ``docs/stage2-on-the-toy.md``), where SFT on the expert's reasoning did.
- grounded_answer: the answer reward, paid only when every phrase the reasoning quotes occurs in
  the news text; it replaces ``answer`` in ``reward_names``. It takes the credit from a right
  label reached through a misquoted cue (a lucky answer) without paying for quoting nothing: on a
  relation fact, reasoning that quotes no cue concludes ``none`` and is wrong. On the toy-full
  valid split, 430 GRPO steps with it lost F1 as without it (rows ga1 and ga2 of
  ``docs/stage2-on-the-toy.md``).
"""

from __future__ import annotations

from typing import Callable, Sequence

from morelib.answer import is_well_formed, parse_label
from morelib.faithfulness import names_entity, quotes_in_text, step6_agrees
from morelib.labels import normalize_label

RewardFunc = Callable[..., list[float]]


def completion_text(completion) -> str:
    """The text of one completion, plain or conversational (assistant messages joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    pieces: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
        elif content is not None:
            raise TypeError(f"message content must be str or a list of parts, got {type(content).__name__}")
    return "".join(pieces)


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for the paper's format (six steps in order, one answer tag holding a label), else 0.0."""
    return [1.0 if is_well_formed(completion_text(c)) else 0.0 for c in completions]


def consistency_reward(completions, **kwargs) -> list[float]:
    """1.0 when Step 6 concludes the label of the answer tag, else 0.0 (beyond the paper)."""
    return [1.0 if step6_agrees(completion_text(c)) else 0.0 for c in completions]


def _column(reward: str, column: str, values: Sequence[str] | None, completions) -> Sequence[str]:
    """A dataset column a reward reads, one value per completion; a missing or short one is named."""
    if values is None:
        raise ValueError(f"{reward} needs the dataset's '{column}' column")
    if len(values) != len(completions):
        raise ValueError(f"{reward}: {len(completions)} completions but {len(values)} values of '{column}'")
    return values


def quotes_reward(completions, source_text: Sequence[str] | None = None, **kwargs) -> list[float]:
    """1.0 when every phrase the reasoning quotes occurs in the news text, else 0.0 (beyond the paper)."""
    texts = _column("quotes_reward", "source_text", source_text, completions)
    return [1.0 if quotes_in_text(completion_text(c), t) else 0.0 for c, t in zip(completions, texts)]


def entity_reward(completions, entity: Sequence[str] | None = None, **kwargs) -> list[float]:
    """1.0 when Steps 2, 4 and 6 each name the queried entity, else 0.0 (beyond the paper)."""
    entities = _column("entity_reward", "entity", entity, completions)
    return [1.0 if names_entity(completion_text(c), e) else 0.0 for c, e in zip(completions, entities)]


def make_length_reward(min_chars: int, require_format: bool = False) -> RewardFunc:
    """A length reward: 1.0 when the output has more than ``min_chars`` characters.

    ``require_format`` (guard, off in the paper) pays only well-formed outputs.
    """
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")

    def length_reward(completions, **kwargs) -> list[float]:
        rewards = []
        for c in completions:
            text = completion_text(c)
            ok = len(text) > min_chars and (not require_format or is_well_formed(text))
            rewards.append(1.0 if ok else 0.0)
        return rewards

    length_reward.__doc__ = f"1.0 when longer than {min_chars} characters (require_format={require_format})."
    return length_reward


def make_answer_reward(require_format: bool = False, require_quotes: bool = False) -> RewardFunc:
    """An answer reward: 1.0 when the parsed label equals the gold ``label`` column.

    ``require_format`` (guard, off in the paper) pays only well-formed outputs.
    ``require_quotes`` (beyond the paper; the ``grounded_answer`` reward) pays a right label only
    when every phrase the reasoning quotes occurs in the news text (the ``source_text`` column).
    """
    name = "grounded_answer_reward" if require_quotes else "answer_reward"

    def answer_reward(completions, label: Sequence[str] | None = None, source_text: Sequence[str] | None = None,
                      **kwargs) -> list[float]:
        labels = _column(name, "label", label, completions)
        texts = _column(name, "source_text", source_text, completions) if require_quotes else [None] * len(labels)
        rewards = []
        for i, (c, g, source) in enumerate(zip(completions, labels, texts)):
            gold = normalize_label(g)
            if gold is None:
                raise ValueError(f"{name}: gold label {g!r} at position {i} is not one of the relations")
            text = completion_text(c)
            ok = (parse_label(text) == gold and (not require_format or is_well_formed(text))
                  and (not require_quotes or quotes_in_text(text, source)))
            rewards.append(1.0 if ok else 0.0)
        return rewards

    answer_reward.__name__ = answer_reward.__qualname__ = name  # TRL logs each reward under its __name__
    return answer_reward


# The one registry: reward name -> factory. A factory takes the reward options by their
# GRPOSettings field names (``REWARD_OPTIONS``) and uses those it needs.
REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "format": lambda **options: format_reward,
    "length": lambda length_threshold, length_requires_format=False, **options: make_length_reward(
        length_threshold, length_requires_format),
    "answer": lambda answer_requires_format=False, **options: make_answer_reward(answer_requires_format),
    "consistency": lambda **options: consistency_reward,  # beyond the paper
    "quotes": lambda **options: quotes_reward,  # beyond the paper
    "entity": lambda **options: entity_reward,  # beyond the paper
    "grounded_answer": lambda answer_requires_format=False, **options: make_answer_reward(  # beyond the paper
        answer_requires_format, require_quotes=True),
}
# The names a profile may list in reward_names (GRPOSettings checks them; only get_reward_funcs builds).
REWARD_NAMES: tuple[str, ...] = tuple(REWARDS)
# The GRPOSettings fields that configure a reward; get_reward_funcs hands each factory all of them.
REWARD_OPTIONS = ("length_threshold", "length_requires_format", "answer_requires_format")


# Where TRL logs the answer reward's batch mean: the paper's, or grounded_answer in its place.
ANSWER_LOG_KEYS = ("rewards/answer_reward/mean", "rewards/grounded_answer_reward/mean")


def answer_log_key(columns) -> str:
    """The first of ``ANSWER_LOG_KEYS`` among a step log's ``columns`` (the paper's when neither is)."""
    return next((key for key in ANSWER_LOG_KEYS if key in columns), ANSWER_LOG_KEYS[0])


def get_reward_funcs(settings, names: Sequence[str] | None = None) -> list[RewardFunc]:
    """The reward functions a ``GRPOSettings`` names (``reward_names``, in the order of
    ``reward_weights``), each configured from the settings' ``REWARD_OPTIONS``.

    This is the one place that turns settings into rewards: the trainer, the trace, notebook 05 and
    the GPU rehearsal call it. ``names`` picks other rewards with the same options (for analysis,
    e.g. ``["length"]``).
    """
    names = list(settings.reward_names if names is None else names)
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; expected some of {sorted(REWARDS)}")
    options = {name: getattr(settings, name) for name in REWARD_OPTIONS}
    return [REWARDS[n](**options) for n in names]


def reward_weights(settings) -> list[float]:
    """The weight of each of ``settings.reward_names`` (TRL's ``reward_weights``; None = 1 each)."""
    names = list(settings.reward_names)
    weights = [1.0] * len(names) if settings.reward_weights is None else [float(w) for w in settings.reward_weights]
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} weights for {len(names)} rewards {names}")
    return weights


def reward_components(completions, label: Sequence[str], settings, names: Sequence[str] | None = None,
                      source_text: Sequence[str] | None = None, entity: Sequence[str] | None = None,
                      ) -> dict[str, list[float]]:
    """Each reward of ``settings`` (or the given ``names``) for every completion, by name (for analysis)."""
    names = list(settings.reward_names if names is None else names)
    funcs = get_reward_funcs(settings, names)
    return {n: f(list(completions), label=label, source_text=source_text, entity=entity) for n, f in zip(names, funcs)}


def total_reward(completions, label: Sequence[str], settings, source_text: Sequence[str] | None = None,
                 entity: Sequence[str] | None = None) -> list[float]:
    """The combined reward the trainer computes: the weighted sum of the settings' rewards (Eq. 5)."""
    weights = reward_weights(settings)
    parts = reward_components(completions, label, settings, source_text=source_text, entity=entity)
    return [sum(w * parts[n][i] for n, w in zip(settings.reward_names, weights)) for i in range(len(completions))]
