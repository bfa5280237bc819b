"""The offline expert: its reasoning passes the filter, its mistakes do not, and it speaks the OpenAI API."""

import random
import subprocess
import sys

import openai
import pytest

from conftest import EXPERT_BYSTANDER as BYSTANDER
from conftest import EXPERT_SUBJECT as SUBJECT
from morelib.answer import is_well_formed, parse_label
from morelib.expert_server import (SAMPLE_ID_HEADER, ExpertConfig, ExpertServer, expert_reply,
                                   gold_from_prompt, reasoning_steps)
from morelib.filtering import check_response
from morelib.labels import candidates


def test_reasoning_is_compact_well_formed_and_exposes_the_facts():
    for meta, gold in ((SUBJECT, "/per/org/leader_of"), (BYSTANDER, "none")):
        text, mistake = expert_reply(meta, gold, random.Random(0), mistake_rate=0.0)
        assert mistake is None
        assert is_well_formed(text) and parse_label(text) == gold
        assert 250 <= len(text) <= 600, len(text)
        steps, obj_type, ent_type = reasoning_steps(meta, gold)
        assert ", ".join(candidates(obj_type, ent_type)) in steps[4]
    text, _ = expert_reply(SUBJECT, "/per/org/leader_of", random.Random(0), 0.0)
    assert "solid" in text and "is a per" in text and "is an org" in text
    text, _ = expert_reply(BYSTANDER, "none", random.Random(0), 0.0)
    assert "hollow" in text and "bystander" in text and "Candidates for loc/org: none." in text


def test_the_experts_reasoning_supports_its_answer_by_every_check():
    """Reasoning written as the expert writes it passes each faithfulness check: the entity in
    Steps 2, 4 and 6, the true types, its quotes in the text, Step 6 concluding the answer."""
    from pathlib import Path

    from morelib import faithfulness
    from morelib.data import Sample

    subject_none = {**SUBJECT, "id": "train-3", "label": "none"}
    for meta, gold in ((SUBJECT, "/per/org/leader_of"), (BYSTANDER, "none"), (subject_none, "none")):
        text, _ = expert_reply(meta, gold, random.Random(0), mistake_rate=0.0)
        headline = f"The senator {meta['cue_words']} {meta['entity']}"
        tokens = tuple(headline.split())
        sample = Sample(id=meta["id"], split="train", text=headline, tokens=tokens, entity=meta["entity"],
                        entity_span=(len(tokens) - 2, len(tokens)), object_name="obj_0", box=(0.5, 0.5, 0.2, 0.2),
                        img_id="x.jpg", image_path=Path("x.jpg"), label=gold)
        facts = {"object": meta["object"], "entity_type": meta["entity_type"], "cue_words": meta["cue_words"]}
        row = {"id": meta["id"], "text": text, "label": parse_label(text), "gold": gold}
        assert faithfulness.problems(row, sample, facts) == [], (meta["id"], text)


def test_every_mistake_is_caught_by_the_filter():
    seen = set()
    for seed in range(60):
        text, mistake = expert_reply(SUBJECT, "/per/org/leader_of", random.Random(seed), mistake_rate=1.0)
        seen.add(mistake)
        reason, _ = check_response(text, "/per/org/leader_of")
        assert reason is not None, (mistake, text)
    assert seen == {"missing_step", "wrong_answer", "malformed_tags"}


def test_gold_is_read_from_the_end_of_the_prompt():
    prompt = "Candidate relations: none, /per/org/leader_of.\n... their relation is /per/org/member_of."
    assert gold_from_prompt(prompt) == "/per/org/member_of"
    assert gold_from_prompt("labels none, /per/per/partner. so the relation is none.") == "none"
    assert gold_from_prompt("no labels here") is None


def _ask(client, sample_id, gold):
    return client.chat.completions.create(
        model="toy-expert", extra_headers={SAMPLE_ID_HEADER: sample_id},
        messages=[{"role": "user", "content": [{"type": "text", "text": f"... the relation is {gold}."}]}])


def test_the_plain_openai_client_talks_to_it(toy_meta):
    with ExpertServer(ExpertConfig(str(toy_meta), mistake_rate=0.0)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = _ask(client, "train-1", "/per/org/leader_of")
        assert parse_label(reply.choices[0].message.content) == "/per/org/leader_of"
        assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
        assert [m.id for m in client.models.list()] == ["toy-expert"]
        with pytest.raises(openai.BadRequestError, match="unknown sample"):
            client.chat.completions.create(model="toy-expert", messages=[{"role": "user", "content": "hi"}])


def test_it_rejects_an_unknown_model_and_a_wrong_key_as_a_real_endpoint_does(toy_meta):
    with ExpertServer(ExpertConfig(str(toy_meta), api_key="sk-right")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="model `gpt-4o` does not exist"):
            client.chat.completions.create(model="gpt-4o", extra_headers={SAMPLE_ID_HEADER: "train-1"},
                                           messages=[{"role": "user", "content": "... the relation is none."}])
        assert _ask(client, "train-1", "none").choices[0].message.content
        wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            _ask(wrong, "train-1", "none")
        assert server.replies == 1


def test_mistakes_are_seeded_per_sample(toy_meta):
    def replies(seed):
        with ExpertServer(ExpertConfig(str(toy_meta), seed=seed, mistake_rate=0.5)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
            return [_ask(client, "train-1", "/per/org/leader_of").choices[0].message.content for _ in range(3)]

    first = replies(3)
    assert len(set(first)) == 1  # the same sample always gets the same reply
    assert first == replies(3)


def test_scripted_faults(toy_meta):
    from morelib.expert_server import Faults

    faults = Faults(retry_after=0.2, script={"train-1": ["429", "500", "malformed", "ok"]})
    with ExpertServer(ExpertConfig(str(toy_meta), faults=faults)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            _ask(client, "train-1", "none")
        assert info.value.response.headers["retry-after"] == "0.2"
        with pytest.raises(openai.InternalServerError):
            _ask(client, "train-1", "none")
        with pytest.raises(ValueError):  # a body that is not JSON
            _ask(client, "train-1", "none")
        assert _ask(client, "train-1", "none").choices[0].message.content
        assert dict(server.injected) == {"429": 1, "500": 1, "malformed": 1}


def test_command_line_server(toy_meta):
    proc = subprocess.Popen([sys.executable, "-m", "morelib.expert_server", "--meta", str(toy_meta), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving 2 samples" in line
        base_url = line.strip().rsplit(" ", 1)[-1]
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        assert parse_label(_ask(client, "train-2", "none").choices[0].message.content) in ("none", None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
