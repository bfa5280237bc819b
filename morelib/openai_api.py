"""One way to call an OpenAI-compatible server, for the expert (annotation) and the student (inference).

The official ``openai`` client does the retrying: 408, 409, 429 and 5xx replies, timeouts and
connection errors are retried up to ``max_retries`` times with exponential backoff (0.5 s
doubling to 8 s, with jitter), and a ``Retry-After`` / ``retry-after-ms`` header of up to two
minutes is waited out exactly. Other 4xx replies are not retried, nor is a 200 whose body is not
JSON (parsing comes after the retry loop). This module adds three things:

* :func:`sync_client` / :func:`async_client` build that client around a :class:`Watch`, which
  sees every attempt (the client's retries included): it counts their outcomes by kind, and it
  declares the endpoint unreachable when connections have kept failing, with no HTTP reply in
  between, for as long as ``unreachable_after`` allows. From then on every request fails at once
  with :class:`EndpointUnreachable`, so a wrong URL or a server that is down stops a run within
  ``unreachable_after`` seconds of the first refused connection, instead of costing every
  request its full retry budget.
* :func:`describe` turns any failure into ``(kind, one-line message naming the URL and model)``;
  the kinds in :data:`FATAL_KINDS` would repeat for every request, so a run stops on them.
* :func:`attempts` reads how many attempts a call took from the retry count the client stamps
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

DEFAULT_MAX_RETRIES = 8
UNREACHABLE_AFTER = 60.0  # seconds of failing connections, with no reply in between, before giving up
CONNECT_TIMEOUT = 10.0  # seconds to open a connection (the request timeout covers the whole reply)
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
    """Sees every HTTP attempt of one client: outcome counts and the unreachable-endpoint rule.

    Connections failing to open (refused, DNS, connect timeout) start a failure streak; any
    HTTP reply ends it. The endpoint is declared unreachable on a failure once the streak is
    old enough that the client's next backoff (at most ``MAX_RETRY_DELAY``) could pass
    ``unreachable_after``, and connection attempts inside a streak get no more connect time than
    is left of it: so a run against a dead endpoint stops within ``unreachable_after`` seconds
    of its first failed connection. Thread-safe: the synchronous client serves a thread pool.
    """

    def __init__(self, unreachable_after: float = UNREACHABLE_AFTER):
        self.unreachable_after = unreachable_after
        self.counts: Counter = Counter()  # attempt outcomes by kind ("ok" for any reply below 400)
        self.replies = 0  # HTTP replies of any status
        self.dead: str | None = None  # why the endpoint was declared unreachable
        self._failing_since: float | None = None  # first connection failure since the last reply
        self._lock = threading.Lock()

    def before(self, request: httpx2.Request) -> None:
        if self.dead is not None:
            raise EndpointUnreachable(message=self.dead, request=request)
        since = self._failing_since
        if since is not None:
            left = max(0.05, since + self.unreachable_after - time.monotonic())
            timeout = dict(request.extensions.get("timeout") or {})
            timeout["connect"] = min(timeout.get("connect") or left, left)
            request.extensions["timeout"] = timeout

    def failed(self, request: httpx2.Request, error: Exception) -> None:
        # Only a connection that cannot be opened says the endpoint is unreachable; a read
        # timeout or a dropped connection means the server is there.
        unreachable = isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout))
        with self._lock:
            self.counts["timeout" if isinstance(error, httpx2.TimeoutException) and not unreachable
                        else "connection"] += 1
            if not unreachable:
                return
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now  # the first failure: the client retries it
            elif self.dead is None and now - self._failing_since >= self.unreachable_after - _max_retry_delay():
                self.dead = f"cannot connect for {now - self._failing_since:.1f} s ({root_cause(error)})"
        self.before(request)

    def answered(self, response: httpx2.Response) -> None:
        with self._lock:
            self._failing_since = None
            self.replies += 1
            self.counts[status_kind(response.status_code)] += 1


def _max_retry_delay() -> float:
    from openai._constants import MAX_RETRY_DELAY  # the client's longest backoff between two attempts

    return MAX_RETRY_DELAY


class _WatchedTransport(httpx2.AsyncBaseTransport, httpx2.BaseTransport):
    """Wraps the default transport so the watch sees each attempt before the client retries it."""

    def __init__(self, inner, watch: Watch):
        self.inner, self.watch = inner, watch

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.watch.before(request)
        try:
            response = self.inner.handle_request(request)
        except httpx2.TransportError as error:
            self.watch.failed(request, error)  # raises EndpointUnreachable once the endpoint is declared dead
            raise
        self.watch.answered(response)
        return response

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.watch.before(request)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.TransportError as error:
            self.watch.failed(request, error)
            raise
        self.watch.answered(response)
        return response

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _timeout(timeout: float) -> httpx2.Timeout:
    return httpx2.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


def _limits() -> httpx2.Limits:
    from openai._constants import DEFAULT_CONNECTION_LIMITS  # the client's own pool size

    return DEFAULT_CONNECTION_LIMITS


def sync_client(base_url: str, api_key: str, *, max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = 600.0,
                watch: Watch | None = None) -> openai.OpenAI:
    """An ``openai.OpenAI`` client whose attempts ``watch`` sees (a new watch if none is given)."""
    transport = _WatchedTransport(httpx2.HTTPTransport(limits=_limits()), watch or Watch())
    http = openai.DefaultHttpxClient(transport=transport, timeout=_timeout(timeout))
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=_timeout(timeout),
                         http_client=http)


def async_client(base_url: str, api_key: str, *, max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = 600.0,
                 watch: Watch | None = None) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` client whose attempts ``watch`` sees (a new watch if none is given)."""
    transport = _WatchedTransport(httpx2.AsyncHTTPTransport(limits=_limits()), watch or Watch())
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


def describe(error: BaseException, base_url: str, model: str, secret: str | None = None) -> tuple[str, str]:
    """``(kind, message)`` for a failed call: the kind is one of :data:`KINDS`; the message is one
    line that names the endpoint and the model. ``secret`` (the API key) never appears in it."""
    where = f"{base_url} (model {model!r})"
    if isinstance(error, EndpointUnreachable):
        kind, text = "unreachable", f"{where}: {error.message}; is the server running and the URL right?"
    elif isinstance(error, openai.APITimeoutError):
        kind, text = "timeout", f"{where}: no reply within the request timeout"
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
    return kind, text


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


def completion_text(completion) -> tuple[str | None, dict]:
    """(text, usage) of a chat completion; raises ``ValueError`` for a reply without choices."""
    choices = getattr(completion, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise ValueError(f"no choices in {one_line(str(completion), 120)}")
    usage = getattr(completion, "usage", None)
    usage = {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens", "total_tokens")} if usage else {}
    return choices[0].message.content, usage
