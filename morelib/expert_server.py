"""The offline expert: a loopback OpenAI-compatible server that writes six-step reasoning for the toy world.

It stands in for GPT-4o in the toy profile. For ``POST /v1/chat/completions`` it reads the
gold answer from the prompt (the last label named there, which our template's gold part
puts at the end), finds the sample's facts in ``toy_meta.jsonl`` by the sample id the
annotation client sends in the ``X-Morelib-Sample-Id`` header, and writes short, regular
reasoning: object look and role, relevance, alignment, the two types, the candidate list of
the type pair, the decision. It reads nothing but ``toy_meta.jsonl``.

Like a real expert it sometimes errs (``mistake_rate``, seeded per sample): a missing step,
a wrong answer, or malformed tags. Like a real endpoint it answers 404 for a model it does not
serve and, when given an ``api_key``, 401 for any other key. For tests it can inject failures
(``Faults``): 429 with Retry-After, 500, hangs past the client's timeout, bodies that are not
JSON, completions without choices or with null content, replies cut short, slow replies.

    with ExpertServer(ExpertConfig(meta_path="runs/toy/data/toy_meta.jsonl")) as server:
        openai.OpenAI(base_url=server.base_url, api_key="unused")...

    python -m morelib.expert_server --meta runs/toy/data/toy_meta.jsonl --port 8765
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from morelib import cost
from morelib.files import read_jsonl
from morelib.labels import NONE, RELATIONS, candidates, relation_types

log = logging.getLogger(__name__)

SAMPLE_ID_HEADER = "X-Morelib-Sample-Id"  # the same name as morelib.annotate.SAMPLE_ID_HEADER
LABEL_RE = re.compile(r"(?<![\w/])(none|/(?:per|org|loc|misc)/(?:per|org|loc|misc)/[a-z_]+)(?![\w/])")
FAULT_KINDS = ("429", "500", "timeout", "malformed", "slow", "empty", "null", "truncated")
MISTAKE_KINDS = ("missing_step", "wrong_answer", "malformed_tags")


@dataclass
class Faults:
    """Failures to inject. Rates are per request; ``script`` fixes the first attempts of a sample."""

    latency: float = 0.0  # seconds added to every reply
    rate_429: float = 0.0
    retry_after: float = 0.05  # seconds, sent in the Retry-After header of a 429
    rate_500: float = 0.0
    rate_timeout: float = 0.0  # hold the reply for `hang` seconds, past the client's timeout
    hang: float = 5.0
    rate_malformed: float = 0.0  # a 200 whose body is not JSON
    rate_empty: float = 0.0  # a 200 whose completion has no choices
    rate_null: float = 0.0  # a 200 whose message content is null
    rate_truncated: float = 0.0  # a reply cut short: the connection closes before Content-Length bytes
    rate_slow: float = 0.0  # an extra `slow` seconds, still within the client's timeout
    slow: float = 0.2
    script: dict[str, list[str]] = field(default_factory=dict)  # sample id -> fault per attempt ("ok" = none)
    seed: int = 0


@dataclass
class ExpertConfig:
    meta_path: str  # toy_meta.jsonl written by morelib.toy
    seed: int = 0
    mistake_rate: float = 0.05  # share of samples answered with an expert mistake
    model: str = "toy-expert"  # the one model it serves; a request for another gets 404
    api_key: str | None = None  # when set, a request with another bearer key gets 401
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port
    faults: Faults = field(default_factory=Faults)


def read_meta(path: str | Path) -> dict[str, dict]:
    """toy_meta.jsonl rows by sample id; fields the expert does not use are kept and ignored."""
    return {row["id"]: row for row in read_jsonl(path, required=("id",))}


# ----------------------------------------------------------------------------- the reasoning


def gold_from_prompt(prompt: str) -> str | None:
    """The gold label stated in the expert prompt: the last label the prompt names."""
    found = LABEL_RE.findall(prompt)
    return found[-1] if found else None


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def reasoning_steps(meta: dict, gold: str) -> tuple[list[str], str, str]:
    """(six step texts, object type, entity type) leading to ``gold`` from the sample's facts."""
    obj = meta.get("object") or {}
    entity = meta.get("entity", "the entity")
    types = relation_types(gold) if gold != NONE else None
    obj_type = types[0] if types else obj.get("type", "misc")
    ent_type = types[1] if types else meta.get("entity_type", "misc")
    look = f"{obj.get('colour', '')} {obj.get('shape', 'shape')}".strip()
    style = obj.get("style", "solid" if meta.get("object_is_subject") else "hollow")
    subject = meta.get("object_is_subject", style == "solid")
    noun = meta.get("subject_noun", "subject")
    cue = meta.get("cue_words", "")
    where = f" at the {obj['position']}" if obj.get("position") else ""

    step1 = f"The object is a {style} {look}{where}."
    step2 = f"The text says the {noun} {cue} {entity}; the image fits it."
    if subject:
        step3 = f"Solid means the subject, so the object is the {noun}."
    else:
        step3 = f"Hollow means a bystander, so the object is not the {noun}."
    step4 = f"The object is {_a(obj_type)} ({look}); the entity {entity} is {_a(ent_type)}."
    step5 = f"Candidates for {obj_type}/{ent_type}: {', '.join(candidates(obj_type, ent_type))}."
    if gold != NONE:
        step6 = f'"{cue}" links the object to {entity}: {gold}.'
    elif subject:
        step6 = f'"{cue}" gives no {obj_type}/{ent_type} relation to {entity}: none.'
    else:
        step6 = f"A bystander has no relation to {entity}: none."
    return [step1, step2, step3, step4, step5, step6], obj_type, ent_type


def compose(steps: list[str], answer: str, skip: int | None = None) -> str:
    """The reply in the paper's format; ``skip`` leaves out one step number (an expert mistake)."""
    think = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1) if i != skip)
    return f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"


def expert_reply(meta: dict, gold: str, rng: random.Random, mistake_rate: float) -> tuple[str, str | None]:
    """(reply text, mistake kind or None). The mistake is drawn from ``rng`` (seeded per sample)."""
    mistake = rng.choice(MISTAKE_KINDS) if rng.random() < mistake_rate else None
    steps, obj_type, ent_type = reasoning_steps(meta, gold)
    if mistake == "wrong_answer":
        others = [r for r in candidates(obj_type, ent_type) if r != gold] or [r for r in RELATIONS if r != gold]
        wrong = rng.choice(others)
        steps[5] = f"Weighing the candidates: {wrong}."
        return compose(steps, wrong), mistake
    if mistake == "missing_step":
        return compose(steps, gold, skip=rng.randrange(2, 6)), mistake
    text = compose(steps, gold)
    if mistake == "malformed_tags":
        variant = rng.randrange(3)
        if variant == 0:
            text = text.replace("</think>", "")
        elif variant == 1:
            text = text.replace(f"<answer>{gold}</answer>", f"Answer: {gold}")
        else:
            text += f"\n<answer>{gold}</answer>"
    return text, mistake


# ----------------------------------------------------------------------------- the HTTP side


def _prompt_parts(body: dict) -> tuple[str, list[tuple[int, int, str]]]:
    """(text of the user turns, [(width, height, detail)] of their images)."""
    import base64
    import io

    from PIL import Image

    texts, images = [], []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                detail = (part.get("image_url") or {}).get("detail", "auto")
                size = (512, 512)
                if url.startswith("data:") and "," in url:
                    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
                        size = im.size
                images.append((size[0], size[1], detail))
    return "\n".join(texts), images


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once under high concurrency

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (its timeout, or a run that stopped): nothing to report
        log.exception("expert server: request from %s failed", client_address)


class ExpertServer:
    """The loopback expert; a context manager that serves in a background thread."""

    def __init__(self, cfg: ExpertConfig):
        self.cfg = cfg
        self.meta = read_meta(cfg.meta_path)
        self.attempts: Counter = Counter()  # requests per sample id
        self.injected: Counter = Counter()  # faults injected, by kind
        self.mistakes: Counter = Counter()  # expert mistakes in replies, by kind
        self.replies = 0
        self._lock = threading.Lock()
        self._fault_rng = random.Random(cfg.faults.seed)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle
    def start(self) -> "ExpertServer":
        handler = type("Handler", (_Handler,), {"expert": self})
        httpd = _HTTPServer((self.cfg.host, self.cfg.port), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="expert-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ExpertServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}/v1"

    # -- behaviour
    def next_fault(self, sample_id: str) -> str:
        """The fault for this attempt of ``sample_id``: its script first, then the random rates."""
        f = self.cfg.faults
        with self._lock:
            attempt = self.attempts[sample_id]
            self.attempts[sample_id] += 1
            script = f.script.get(sample_id, [])
            if attempt < len(script):
                kind = script[attempt]
            else:
                x, kind = self._fault_rng.random(), "ok"
                for name, rate in (("429", f.rate_429), ("500", f.rate_500), ("timeout", f.rate_timeout),
                                   ("malformed", f.rate_malformed), ("slow", f.rate_slow),
                                   ("empty", f.rate_empty), ("null", f.rate_null), ("truncated", f.rate_truncated)):
                    if x < rate:
                        kind = name
                        break
                    x -= rate
            if kind != "ok":
                if kind not in FAULT_KINDS:
                    raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS} or 'ok'")
                self.injected[kind] += 1
        return kind

    def completion(self, body: dict, sample_id: str) -> dict:
        prompt, images = _prompt_parts(body)
        gold = gold_from_prompt(prompt)
        if gold is None:
            raise LookupError("the prompt names no gold label")
        rng = random.Random(f"{self.cfg.seed}:{sample_id}")
        text, mistake = expert_reply(self.meta[sample_id], gold, rng, self.cfg.mistake_rate)
        prompt_tokens = (cost.text_tokens(prompt) + cost.MESSAGE_OVERHEAD_TOKENS
                         + sum(cost.image_tokens(w, h, d if d in cost.DETAILS else "auto") for w, h, d in images))
        completion_tokens = cost.text_tokens(text)
        with self._lock:
            self.replies += 1
            if mistake:
                self.mistakes[mistake] += 1
        return {
            "id": f"chatcmpl-toy-{sample_id}-{self.attempts[sample_id]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.cfg.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    expert: ExpertServer

    def log_message(self, fmt, *args):  # the request line only: never headers (they hold the API key)
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to do

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        body = {"error": {"message": message, "type": "toy_expert_error", "code": status}}
        self._send(status, json.dumps(body).encode(), headers)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": self.expert.cfg.model, "object": "model", "owned_by": "morelib"}
            self._send(200, json.dumps({"object": "list", "data": [model]}).encode())
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "the request body is not JSON")
        expert = self.expert
        if expert.cfg.api_key is not None and self.headers.get("Authorization") != f"Bearer {expert.cfg.api_key}":
            return self._error(401, "Incorrect API key provided.")
        if body.get("model") != expert.cfg.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.")
        sample_id = self.headers.get(SAMPLE_ID_HEADER)
        if not sample_id or sample_id not in self.expert.meta:
            return self._error(400, f"unknown sample: send its id in the {SAMPLE_ID_HEADER} header")
        faults = expert.cfg.faults
        fault = expert.next_fault(sample_id)
        if faults.latency:
            time.sleep(faults.latency)
        if fault == "429":
            return self._error(429, "rate limit reached (injected)", {"Retry-After": f"{faults.retry_after:g}"})
        if fault == "500":
            return self._error(500, "server error (injected)")
        if fault == "timeout":
            time.sleep(faults.hang)
        elif fault == "slow":
            time.sleep(faults.slow)
        if fault == "malformed":
            return self._send(200, b'{"id": "chatcmpl-broken", "choices": [{"message": ')
        try:
            reply = expert.completion(body, sample_id)
        except LookupError as exc:
            return self._error(400, str(exc))
        if fault == "empty":
            reply["choices"] = []
        elif fault == "null":
            reply["choices"][0]["message"]["content"] = None
        payload = json.dumps(reply).encode()
        if fault == "truncated":
            return self._send_cut(payload)
        self._send(200, payload)

    def _send_cut(self, payload: bytes) -> None:
        """Promise the whole payload, send half of it, close the connection."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morelib.expert_server", description=__doc__.split("\n")[0])
    parser.add_argument("--meta", required=True, help="toy_meta.jsonl")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="toy-expert", help="the model name it serves")
    parser.add_argument("--mistake-rate", type=float, default=0.05)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-500", type=float, default=0.0)
    args = parser.parse_args(argv)
    faults = Faults(latency=args.latency, rate_429=args.rate_429, rate_500=args.rate_500, seed=args.seed)
    cfg = ExpertConfig(args.meta, seed=args.seed, mistake_rate=args.mistake_rate, model=args.model, host=args.host,
                       port=args.port, faults=faults)
    server = ExpertServer(cfg).start()
    print(f"offline expert serving {len(server.meta)} samples at {server.base_url}", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
