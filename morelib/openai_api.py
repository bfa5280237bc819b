"""One way to call an OpenAI-compatible server, for the expert (annotation) and the student (inference).

The official ``openai`` client does the retrying: 408, 409, 429 and 5xx replies, timeouts and
connection errors are retried up to ``max_retries`` times with exponential backoff (0.5 s
doubling to 8 s, with jitter), and a ``Retry-After`` / ``retry-after-ms`` header of up to two
minutes is waited out exactly. This module adds four things, all in the transport under the
client, so they see every attempt (the client's retries included):

* A 200 whose body is not a complete chat completion (not JSON, cut short, no ``choices``, a
  message without text) is handed to the client as a 502, so it is retried like any server
  error, within the same budget; the last one's kind is ``malformed`` or ``empty``.
* Each attempt has one deadline, ``timeout`` seconds from sending to the reply's last byte
  (connecting included), however slowly the server trickles its reply.
* A :class:`Watch` counts the attempts' outcomes and gives up on the endpoint when nothing
  usable has come back for ``unreachable_after`` seconds, counted from the first request:
  connections refused, attempts timed out (a server that accepts and never answers), 5xx and
  broken replies alike. From then on every request fails at once with
  :class:`EndpointUnreachable`, so a dead or hung endpoint stops a run in bounded time however
  many requests are pending.
* :func:`describe` turns any failure into ``(kind, one-line message naming the URL and model)``;
  the kinds in :data:`FATAL_KINDS` would repeat for every request, so a run stops on them.
  :func:`attempts` reads how many attempts a call took from the retry count the client stamps
  on each request (``x-stainless-retry-count``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter

import httpx2
import openai

from morelib import secrets

DEFAULT_MAX_RETRIES = 8
UNREACHABLE_AFTER = 60.0  # seconds without a usable reply, from the first request, before giving up
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (the request timeout covers the whole reply)
REQUEST_TIMEOUT = 120.0  # seconds one attempt may take, connect to last byte
BAD_REPLY_TYPE = "morelib_bad_reply"  # the error type of a broken 200 handed to the client as a 502
RETRY_COUNT_HEADER = "x-stainless-retry-count"

# Attempt outcomes, as the Watch counts them and as records name their error.
KINDS = ("ok", "rate_limit", "server_error", "timeout", "connection", "unreachable", "auth", "not_found",
         "rejected", "malformed", "empty", "other")
FATAL_KINDS = frozenset({"unreachable", "auth", "not_found"})


class EndpointUnreachable(openai.APIConnectionError):
    """Connections to the endpoint have failed for longer than the watch allows.

    A subclass of ``openai.APIConnectionError``, which the client passes on without retrying.
    """


class EndpointError(RuntimeError):
    """A call failed; ``kind`` is one of :data:`KINDS` and the message is one line."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS


def status_kind(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limit"
    if status >= 500 or status in (408, 409):
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "rejected"


class Watch:
    """Sees every HTTP attempt of one client: outcome counts and the dead-endpoint rule.

    The clock starts at the first attempt after the last usable reply (a complete chat
    completion, or a 4xx: the server is there and says why). Every failure after it (a
    connection that cannot be opened or drops, an attempt past its deadline, a 5xx, a broken
    200) is checked against the clock: once it is old enough that the client's next backoff (at
    most ``MAX_RETRY_DELAY``) could pass ``unreachable_after``, and this is not the streak's
    first failure (one blip is always retried), the endpoint is declared dead. Attempts after a
    failure get no more connect time than is left. Thread-safe: the synchronous client serves a
    thread pool.
    """

    def __init__(self, unreachable_after: float = UNREACHABLE_AFTER):
        self.unreachable_after = unreachable_after
        self.counts: Counter = Counter()  # attempt outcomes by kind ("ok" for a complete completion)
        self.replies = 0  # HTTP replies of any status
        self.dead: str | None = None  # why the endpoint was given up on
        self._since: float | None = None  # first attempt since the last usable reply
        self._failures = 0  # failures since the last usable reply
        self._only_connects = True  # every one of them a connection that could not be opened
        self._lock = threading.Lock()

    def before(self, request: httpx2.Request) -> None:
        if self.dead is not None:
            raise EndpointUnreachable(message=self.dead, request=request)
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            left = max(0.05, self._since + self.unreachable_after - now)
            failing = self._failures > 0
        if failing:
            timeout = dict(request.extensions.get("timeout") or {})
            timeout["connect"] = min(timeout.get("connect") or left, left)
            request.extensions["timeout"] = timeout

    def failed(self, request: httpx2.Request, error: Exception) -> None:
        """An attempt that got no reply; raises :class:`EndpointUnreachable` once the endpoint is dead."""
        opening = isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout))
        timed_out = isinstance(error, httpx2.TimeoutException) and not opening
        with self._lock:
            self.counts["timeout" if timed_out else "connection"] += 1
            why = "no reply within the request timeout" if timed_out else root_cause(error)
            self._failure(why, opening)
        self.before(request)

    def answered(self, response: httpx2.Response, kind: str | None = None) -> None:
        """A reply; ``kind`` overrides the status's kind (a broken 200 is ``malformed`` or ``empty``)."""
        status = response.status_code
        kind = kind or status_kind(status)
        with self._lock:
            self.replies += 1
            self.counts[kind] += 1
            if kind == "ok" or (400 <= status < 500 and kind != "server_error"):
                self._since, self._failures, self._only_connects = None, 0, True
            else:
                self._failure(f"HTTP {status}" if kind == "server_error" else f"a {kind} reply", False)

    def _failure(self, why: str, opening: bool) -> None:  # under the lock
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self._failures += 1
        self._only_connects = self._only_connects and opening
        age = now - self._since
        if self.dead is None and self._failures > 1 and age >= self.unreachable_after - _max_retry_delay():
            what = "cannot connect" if self._only_connects else "no usable reply"
            self.dead = f"{what} for {age:.1f} s since the first request ({why})"


def _max_retry_delay() -> float:
    from openai._constants import MAX_RETRY_DELAY  # the client's longest backoff between two attempts

    return MAX_RETRY_DELAY


def _bad_completion(body: bytes) -> tuple[str, str] | None:
    """``(kind, why)`` when a 200's body is not a complete chat completion with text; else None."""
    try:
        data = json.loads(body)
    except ValueError as error:
        return "malformed", f"the body is not JSON ({error}): {one_line(body.decode('utf-8', 'replace'), 80)}"
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        return "malformed", f"no choices in {one_line(json.dumps(data), 80)}"
    if not choices:
        return "empty", "its choices are empty (no message at all)"
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return "malformed", "the first choice has no message"
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        return "empty", f"the message has no text (content: {one_line(json.dumps(content), 40)})"
    return None


def _as_server_error(request: httpx2.Request, kind: str, why: str) -> httpx2.Response:
    """A broken 200 as a 502 the client retries; the body says why, and ``describe`` reads the kind."""
    body = {"error": {"message": f"the server answered 200 without a complete chat completion: {why}",
                      "type": BAD_REPLY_TYPE, "code": kind}}
    return httpx2.Response(502, json=body, request=request)


def _checks_body(request: httpx2.Request) -> bool:
    return request.method == "POST" and request.url.path.rstrip("/").endswith("/chat/completions")


def _deadline(request: httpx2.Request, total: float) -> float:
    """Set every phase's timeout to at most ``total``; the attempt's end, on the monotonic clock."""
    timeout = dict(request.extensions.get("timeout") or {})
    for phase in ("connect", "read", "write", "pool"):
        timeout[phase] = min(timeout.get(phase) or total, total)
    request.extensions["timeout"] = timeout
    return time.monotonic() + total


def _past(deadline: float, request: httpx2.Request, total: float) -> None:
    if time.monotonic() > deadline:
        raise httpx2.ReadTimeout(f"no complete reply within {total:g} s", request=request)


class _WatchedTransport(httpx2.AsyncBaseTransport, httpx2.BaseTransport):
    """Wraps the default transport: one deadline per attempt, broken 200s as 502s, the watch sees each attempt."""

    def __init__(self, inner, watch: Watch, total: float):
        self.inner, self.watch, self.total = inner, watch, total

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.watch.before(request)
        deadline = _deadline(request, self.total)
        try:
            response = self.inner.handle_request(request)
            chunks = []
            for chunk in response.stream:  # the socket's timeout bounds each read; this, their sum
                chunks.append(chunk)
                _past(deadline, request, self.total)
            response.stream.close()
        except httpx2.TransportError as error:
            self.watch.failed(request, error)  # raises EndpointUnreachable once the endpoint is declared dead
            raise
        return self._judge(request, response, b"".join(chunks))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        import asyncio

        self.watch.before(request)
        _deadline(request, self.total)
        try:
            try:
                response, body = await asyncio.wait_for(self._fetch(request), self.total)
            except (asyncio.TimeoutError, TimeoutError):
                raise httpx2.ReadTimeout(f"no complete reply within {self.total:g} s", request=request) from None
        except httpx2.TransportError as error:
            self.watch.failed(request, error)
            raise
        return self._judge(request, response, body)

    async def _fetch(self, request: httpx2.Request) -> tuple[httpx2.Response, bytes]:
        response = await self.inner.handle_async_request(request)
        try:
            body = b"".join([chunk async for chunk in response.stream])
        finally:
            await response.stream.aclose()
        return response, body

    def _judge(self, request: httpx2.Request, response: httpx2.Response, body: bytes) -> httpx2.Response:
        """The reply the client sees: ``body`` in full, or a 502 for a broken 200."""
        bad = None
        if response.status_code == 200 and _checks_body(request):
            try:  # the body as the client will read it (the server may have compressed it)
                decoded = httpx2.Response(200, headers=response.headers, content=body).read()
            except httpx2.DecodingError as error:
                bad = "malformed", f"the body cannot be decoded ({error})"
            else:
                bad = _bad_completion(decoded)
        if bad is not None:
            self.watch.answered(response, kind=bad[0])
            return _as_server_error(request, *bad)
        self.watch.answered(response)
        return httpx2.Response(response.status_code, headers=response.headers, content=body, request=request,
                               extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _timeout(timeout: float) -> httpx2.Timeout:
    return httpx2.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


def _limits() -> httpx2.Limits:
    from openai._constants import DEFAULT_CONNECTION_LIMITS  # the client's own pool size

    return DEFAULT_CONNECTION_LIMITS


def sync_client(base_url: str, api_key: str, *, max_retries: int = DEFAULT_MAX_RETRIES,
                timeout: float = REQUEST_TIMEOUT, watch: Watch | None = None) -> openai.OpenAI:
    """An ``openai.OpenAI`` client whose attempts ``watch`` sees (a new watch if none is given);
    ``timeout`` is each attempt's deadline, connect to last byte."""
    secrets.remember(api_key)
    transport = _WatchedTransport(httpx2.HTTPTransport(limits=_limits()), watch or Watch(), timeout)
    http = openai.DefaultHttpxClient(transport=transport, timeout=_timeout(timeout))
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=_timeout(timeout),
                         http_client=http)


def async_client(base_url: str, api_key: str, *, max_retries: int = DEFAULT_MAX_RETRIES,
                 timeout: float = REQUEST_TIMEOUT, watch: Watch | None = None) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` client whose attempts ``watch`` sees (a new watch if none is given);
    ``timeout`` is each attempt's deadline, connect to last byte."""
    secrets.remember(api_key)
    transport = _WatchedTransport(httpx2.AsyncHTTPTransport(limits=_limits()), watch or Watch(), timeout)
    http = openai.DefaultAsyncHttpxClient(transport=transport, timeout=_timeout(timeout))
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries,
                              timeout=_timeout(timeout), http_client=http)


def root_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost operating-system error under ``error`` (``ConnectionRefusedError:
    ...``, ``gaierror: ...``): the wrappers above it (httpx, httpcore, anyio) say only "connection error"."""
    seen, found = set(), error
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            found = error
        error = error.__cause__ or error.__context__
    return one_line(f"{type(found).__name__}: {found}")


def one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(error: openai.APIStatusError) -> str:
    """The server's own words: ``error.message`` of a JSON body, else the body text."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        return json.dumps(body)
    return str(body or error.message)


def _bad_reply_kind(error: openai.APIStatusError) -> str | None:
    """``malformed`` or ``empty`` for a broken 200 that the transport handed on as a 502."""
    inner = error.body.get("error", error.body) if isinstance(error.body, dict) else None
    if isinstance(inner, dict) and inner.get("type") == BAD_REPLY_TYPE:
        return str(inner.get("code"))
    return None


def describe(error: BaseException, base_url: str, model: str, secret: str | None = None) -> tuple[str, str]:
    """``(kind, message)`` for a failed call: the kind is one of :data:`KINDS`; the message is one
    line that names the endpoint and the model. ``secret`` (the API key) never appears in it."""
    where = f"{base_url} (model {model!r})"
    if isinstance(error, EndpointUnreachable):
        hint = ("is the server running and the URL right?" if "cannot connect" in error.message
                else "the server is there but gives nothing usable; see its log (or raise the request timeout)")
        kind, text = "unreachable", f"{where}: {error.message}; {hint}"
    elif isinstance(error, openai.APITimeoutError):
        kind, text = "timeout", f"{where}: no complete reply within the request timeout"
    elif isinstance(error, openai.APIStatusError) and _bad_reply_kind(error):
        kind, text = _bad_reply_kind(error), f"{where}: {_server_message(error)}"
    elif isinstance(error, openai.APIConnectionError):
        opening = isinstance(error.__cause__, (httpx2.ConnectError, httpx2.ConnectTimeout))
        kind, text = "connection", f"{where}: {'cannot connect' if opening else 'connection failed'} ({root_cause(error)})"
    elif isinstance(error, openai.APIStatusError):
        kind = status_kind(error.status_code)
        hint = {"auth": "the server rejected the API key", "not_found": "the server knows no such model or URL"}
        text = f"{where}: HTTP {error.status_code}: {hint[kind] + ': ' if kind in hint else ''}{_server_message(error)}"
    elif isinstance(error, (ValueError, openai.APIResponseValidationError)):  # a body that is not JSON
        kind, text = "malformed", f"{where}: the reply is not a chat completion ({type(error).__name__}: {error})"
    else:
        kind, text = "other", f"{where}: {type(error).__name__}: {error}"
    text = one_line(text)
    if secret:
        text = text.replace(secret, "<api key>")
    return kind, secrets.scrub(text)


def attempts(source) -> int:
    """Attempts one call took: a raw response (``with_raw_response``) or the error it raised."""
    if hasattr(source, "retries_taken"):
        return source.retries_taken + 1
    request = getattr(source, "request", None)
    if request is None and getattr(source, "response", None) is not None:
        request = source.response.request
    try:
        return int(request.headers.get(RETRY_COUNT_HEADER, 0)) + 1
    except (AttributeError, ValueError):
        return 1


def completion_text(completion) -> tuple[str, dict]:
    """(text, usage) of a chat completion; raises ``ValueError`` for a reply without choices or text
    (the transport already retries those; this guards completions from elsewhere, e.g. the Batch API)."""
    choices = getattr(completion, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise ValueError(f"no choices in {one_line(str(completion), 120)}")
    if not (choices[0].message.content or "").strip():
        raise ValueError(f"the message's content is {choices[0].message.content!r}")
    usage = getattr(completion, "usage", None)
    usage = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens", "total_tokens")} if usage else {}
    return choices[0].message.content, usage
