"""The one way to call an OpenAI-compatible server: the openai client's retries, attempt counts,
one-line failures, and a bounded wait for an endpoint that cannot be reached."""

import socket
import time

import openai
import pytest

from morelib import openai_api
from morelib.expert_server import SAMPLE_ID_HEADER, ExpertConfig, ExpertServer, Faults


@pytest.fixture
def serve(toy_meta):
    """Start offline expert servers (on conftest's toy_meta; sample train-1) with scripted faults."""
    servers = []

    def start(**faults):
        servers.append(ExpertServer(ExpertConfig(str(toy_meta), faults=Faults(retry_after=0.01, **faults))).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def ask(client, model="toy-expert"):
    return client.chat.completions.with_raw_response.create(
        model=model, extra_headers={SAMPLE_ID_HEADER: "train-1"},
        messages=[{"role": "user", "content": "... their relation is /per/org/leader_of."}])


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_the_client_retries_and_the_attempts_are_counted(serve):
    server = serve(script={"train-1": ["429", "500", "ok"]})
    watch = openai_api.Watch()
    client = openai_api.sync_client(server.base_url, "k", max_retries=3, timeout=5, watch=watch)
    raw = ask(client)
    text, usage = openai_api.completion_text(raw.parse())
    assert openai_api.attempts(raw) == 3 and "<answer>" in text and usage["completion_tokens"] > 0
    assert dict(watch.counts) == {"rate_limit": 1, "server_error": 1, "ok": 1} and watch.replies == 3


def test_failures_become_one_line_with_the_url_and_the_model(serve):
    server = serve(script={"train-1": ["500", "500", "malformed", "malformed"]})
    client = openai_api.sync_client(server.base_url, "sk-secret-1", max_retries=1, timeout=5)
    with pytest.raises(openai.InternalServerError) as info:
        ask(client)
    kind, message = openai_api.describe(info.value, server.base_url, "toy-expert")
    assert kind == "server_error" and openai_api.attempts(info.value) == 2
    assert message.startswith(f"{server.base_url} (model 'toy-expert'): HTTP 500") and "\n" not in message
    with pytest.raises(openai.APIStatusError) as info:  # a 200 whose body is not JSON, twice: retried, then failed
        ask(client)
    kind, message = openai_api.describe(info.value, server.base_url, "toy-expert")
    assert kind == "malformed" and openai_api.attempts(info.value) == 2 and "not JSON" in message
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, model="gpt-4o")
    kind, message = openai_api.describe(info.value, server.base_url, "gpt-4o", secret="gpt-4o")
    assert kind == "not_found" and kind in openai_api.FATAL_KINDS and "<api key>" in message


def test_an_unreachable_endpoint_fails_within_its_bound():
    url = free_url()
    # 9 s leaves 1 s of retrying before the client's longest backoff (8 s) could pass the bound.
    watch = openai_api.Watch(unreachable_after=9.0)
    client = openai_api.sync_client(url, "k", max_retries=100, timeout=5, watch=watch)
    t0 = time.perf_counter()
    with pytest.raises(openai_api.EndpointUnreachable) as info:
        ask(client)
    seconds = time.perf_counter() - t0
    assert 1.0 <= seconds < 9.0 and openai_api.attempts(info.value) >= 3
    kind, message = openai_api.describe(info.value, url, "m")
    assert kind == "unreachable" and url in message and "cannot connect" in message
    t0 = time.perf_counter()
    with pytest.raises(openai_api.EndpointUnreachable):  # from now on, at once
        ask(client)
    assert time.perf_counter() - t0 < 0.5


def test_a_reply_ends_a_streak_of_failed_connections(serve):
    server = serve()
    watch = openai_api.Watch(unreachable_after=0.0)
    dead = openai_api.sync_client(free_url(), "k", max_retries=0, timeout=5, watch=watch)
    alive = openai_api.sync_client(server.base_url, "k", max_retries=0, timeout=5, watch=watch)
    with pytest.raises(openai.APIConnectionError):
        ask(dead)  # the first failure of a streak is always retried
    ask(alive)
    with pytest.raises(openai.APIConnectionError) as info:
        ask(dead)
    assert not isinstance(info.value, openai_api.EndpointUnreachable)  # a new streak
    with pytest.raises(openai_api.EndpointUnreachable):
        ask(dead)


def test_a_broken_200_is_retried_like_a_5xx_within_the_same_budget(serve):
    server = serve(script={"train-1": ["malformed", "truncated", "ok"]})  # empty ones: the async test below
    watch = openai_api.Watch()
    client = openai_api.sync_client(server.base_url, "k", max_retries=2, timeout=5, watch=watch)
    raw = ask(client)
    text, _ = openai_api.completion_text(raw.parse())
    assert openai_api.attempts(raw) == 3 and "<answer>" in text
    assert watch.counts == {"malformed": 1, "connection": 1, "ok": 1}
    server = serve(script={"train-1": ["null", "empty"]})  # the budget spent on empty replies: a failure, never ""
    client = openai_api.sync_client(server.base_url, "k", max_retries=1, timeout=5)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client)
    assert openai_api.describe(info.value, server.base_url, "toy-expert")[0] == "empty"


def test_the_async_client_retries_a_broken_200_too(serve):
    import asyncio

    server = serve(script={"train-1": ["empty", "null", "ok"]})

    async def call():
        client = openai_api.async_client(server.base_url, "k", max_retries=2, timeout=5)
        try:
            return await client.chat.completions.with_raw_response.create(
                model="toy-expert", extra_headers={SAMPLE_ID_HEADER: "train-1"},
                messages=[{"role": "user", "content": "... their relation is /per/org/leader_of."}])
        finally:
            await client.close()

    raw = asyncio.run(call())
    assert openai_api.attempts(raw) == 3 and "<answer>" in openai_api.completion_text(raw.parse())[0]


@pytest.mark.parametrize("fault", ["timeout", "500"])
def test_a_server_that_hangs_or_always_fails_is_given_up_on(serve, fault):
    # A server that accepts and never answers, or answers 500 to everything: the clock runs from
    # the first request, so the client's 100 retries are not waited out.
    server = serve(rate_timeout=1.0 if fault == "timeout" else 0.0, rate_500=1.0 if fault == "500" else 0.0, hang=30)
    watch = openai_api.Watch(unreachable_after=8.5)  # 0.5 s before the client's longest backoff could pass it
    client = openai_api.sync_client(server.base_url, "k", max_retries=100, timeout=0.5, watch=watch)
    t0 = time.perf_counter()
    with pytest.raises(openai_api.EndpointUnreachable) as info:
        ask(client)
    assert time.perf_counter() - t0 < 5.0
    kind, message = openai_api.describe(info.value, server.base_url, "toy-expert")
    assert kind == "unreachable" and "no usable reply" in message
    assert watch.counts["timeout" if fault == "timeout" else "server_error"] >= 2
