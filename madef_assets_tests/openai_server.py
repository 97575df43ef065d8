"""A real OpenAI-compatible HTTP server on loopback for tests and benchmarks.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions. Answers are deterministic
functions of the prompt. Faults are injected by markers in the prompt:

  [[429xN]]        the first N requests for this prompt get 429 with Retry-After
  [[500xN]]        the first N get 500
  [[timeoutxN]]    the first N sleep past the client's timeout before answering
  [[malformedxN]]  the first N get a 200 whose body is not JSON
  [[always500]]    every request gets 500
  [[400]]          every request gets 400 (not retryable)
  [[filter]]       finish_reason content_filter
  [[moderated]]    400 as DashScope's compatible mode rejects an input (code data_inspection_failed)
  [[policy]]       400 as OpenAI rejects a prompt (code content_policy_violation)
  [[refuse]]       a 200 whose answer is a refusal ("抱歉，我无法…" for Chinese prompts, "I can't help…" else)
  [[structured_refusal]]  a structured-output chat answer that declines in `refusal` (OpenAI's shape)
  [[echo_key]]     401 whose error message echoes the request's Authorization header, whole and half-masked

Structured outputs: a request with `response_format` json_schema (OpenAI's shape; a schema that is not a valid
JSON schema gets 400 as OpenAI answers), json_object (the schema is read from the instruction madef appends to
the prompt; none there gets 400) or vLLM's `structured_outputs` extra body (json / choice / regex) is answered
with a value of that shape, chosen by the prompt's hash (`shaped_answer`); `structured` counts them by kind.
`answer(prompt, request)`, when given, still decides the text, so a test can answer in the shape or off it.

`latency_s` delays every answer (a `(low, high)` pair: a per-prompt delay drawn uniformly by the prompt's
hash); `rate_429` makes that share of requests (seeded) answer 429. `faults` gives providers' behaviour to
unmarked prompts, chosen per prompt by a hash so every run sees the same:
{"moderated": 0.02, "filter": 0.005, "refuse": 0.03, "429": 0.05, "500": 0.02, "timeout": 0.005, "malformed": 0.01}
— the transient ones on a prompt's first request only. `answer(prompt, request)` replaces the default answer text;
`top_logprobs(prompt, request)` (a dict token -> log-probability) replaces the fixed top log-probabilities.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jsonschema import Draft202012Validator, SchemaError

_MARKER = re.compile(r"\[\[(429|500|timeout|malformed)x(\d+)\]\]")


def fake_answer(prompt: str) -> str:
    return f"answer({len(prompt)}): {prompt[-40:]}"


MODERATED = {
    "moderated": b'{"error": {"code": "data_inspection_failed", "param": null, "message": '
    b'"Input data may contain inappropriate content.", "type": "data_inspection_failed"}}',
    "policy": b'{"error": {"code": "content_policy_violation", "param": null, "message": '
    b'"Your request was rejected as a result of our safety system.", "type": "invalid_request_error"}}',
}
TRANSIENT_FAULTS = ("429", "500", "timeout", "malformed")


def refusal_text(prompt: str) -> str:
    if re.search(r"[\u4e00-\u9fff]", prompt):
        return "抱歉，我无法协助完成这个请求。"
    return "I can't help with that."


def fault_for(prompt: str, faults: dict[str, float]) -> str | None:
    """The provider behaviour an unmarked prompt gets: a stable function of the prompt and the rates."""
    draw = int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64
    for kind, rate in sorted(faults.items()):
        if draw < rate:
            return kind
        draw -= rate
    return None


_FAKE_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+")


def fake_tokens(text: str) -> list[str]:
    """The server's 'tokens': whitespace-separated words, and each Chinese character on its own."""
    return _FAKE_TOKEN.findall(text)


def fake_token_logprobs(text: str) -> list[float]:
    """One log-probability per fake token; rarer-looking (longer) words score lower."""
    return [-(0.2 + len(word) / 4) for word in fake_tokens(text)]


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 drops connects when hundreds open at once

    def handle_error(self, request, client_address) -> None:
        # A client killed mid-request (the SIGKILL tests and benchmarks) resets its connections.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class OpenAICompatibleServer:
    def __init__(
        self,
        latency_s: float | tuple[float, float] = 0.0,
        timeout_sleep_s: float = 3.0,
        rate_429: float = 0.0,
        retry_after_s: float = 0.05,
        seed: int = 0,
        faults: dict[str, float] | None = None,
        answer=None,
        top_logprobs=None,
        port: int = 0,
    ):
        self.faults = dict(faults or {})
        self.answer = answer
        self.top_logprobs = top_logprobs
        self.by_fault: Counter = Counter()
        self.latency_s = latency_s
        self.timeout_sleep_s = timeout_sleep_s
        self.rate_429 = rate_429
        self.retry_after_s = retry_after_s
        self.fail_status: int | None = None  # answer every request with this status (an unhealthy replica)
        self.requests = Counter()
        self.structured: Counter = Counter()  # structured-output requests by kind (json_schema, json_object, ...)
        self.authorizations: Counter = Counter()  # Authorization header values received
        self.total_requests = 0
        self.answered_ok = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out without a delayed-ACK stall

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200, json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode()
                    )
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                chat = self.path.rstrip("/") == "/v1/chat/completions"
                if not chat and self.path.rstrip("/") != "/v1/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                prompt = request["messages"][-1]["content"] if chat else request["prompt"]
                authorization = self.headers.get("Authorization", "")
                with server._lock:
                    server.authorizations[authorization] += 1
                if "[[echo_key]]" in prompt:
                    key = authorization.removeprefix("Bearer ")
                    message = (
                        f"Incorrect API key provided: {key} (header {authorization!r}, "
                        f"shown as {key[:6]}{'*' * 20}{key[-4:]})."
                    )
                    self._send(401, json.dumps({"error": {"message": message, "code": "invalid_api_key"}}).encode())
                    return
                status, body, headers = server.respond(prompt, request, chat)
                self._send(status, body, headers)

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def latency_for(self, prompt: str) -> float:
        if not isinstance(self.latency_s, tuple):
            return self.latency_s
        low, high = self.latency_s
        fraction = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
        return low + (high - low) * fraction

    def respond(self, prompt: str, request: dict, chat: bool) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.total_requests += 1
            self.requests[prompt] += 1
            seen = self.requests[prompt]
            random_429 = self.rate_429 > 0 and self._rng.random() < self.rate_429
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._respond(prompt, request, chat, seen, random_429)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(
        self, prompt: str, request: dict, chat: bool, seen: int, random_429: bool
    ) -> tuple[int, bytes, dict[str, str]]:
        if self.latency_s:
            time.sleep(self.latency_for(prompt))
        error = b'{"error": {"message": "injected", "type": "server_error"}}'
        if self.fail_status:
            return self.fail_status, error, {}
        for kind, count in _MARKER.findall(prompt):
            if seen <= int(count):
                if kind == "429":
                    return 429, error, {"Retry-After": str(self.retry_after_s)}
                if kind == "500":
                    return 500, error, {}
                if kind == "timeout":
                    time.sleep(self.timeout_sleep_s)
                    break
                if kind == "malformed":
                    return 200, b'{"id": "x", "choices": [{"text": ', {}
        if "[[always500]]" in prompt:
            return 500, error, {}
        if "[[400]]" in prompt:
            return 400, b'{"error": {"message": "bad request", "type": "invalid_request_error"}}', {}
        fault = fault_for(prompt, self.faults) if self.faults else None
        if fault:
            with self._lock:
                self.by_fault[fault] += 1
        for kind, body in MODERATED.items():
            if f"[[{kind}]]" in prompt or fault == kind:
                return 400, body, {}
        if random_429 or (fault == "429" and seen == 1):
            return 429, error, {"Retry-After": str(self.retry_after_s)}
        if fault == "500" and seen == 1:
            return 500, error, {}
        if fault == "malformed" and seen == 1:
            return 200, b'{"id": "x", "choices": [{"text": ', {}
        if fault == "timeout" and seen == 1:
            time.sleep(self.timeout_sleep_s)
        with self._lock:
            self.answered_ok += 1
        refuse = "[[refuse]]" in prompt or fault == "refuse"
        try:
            shaped = self._shaped(prompt, request)
        except ValueError as exc:
            return 400, json.dumps({"error": {"message": str(exc), "type": "invalid_request_error"}}).encode(), {}
        body = self._body(prompt, request, chat, refuse, filtered=fault == "filter", shaped=shaped)
        return 200, json.dumps(body).encode(), {}

    def _shaped(self, prompt: str, request: dict) -> str | None:
        """The answer text for a structured-output request (None for a free-text one)."""
        fmt, extra = request.get("response_format") or {}, request.get("structured_outputs") or {}
        if fmt.get("type") == "json_schema":
            kind, schema = "json_schema", fmt.get("json_schema", {}).get("schema")
        elif fmt.get("type") == "json_object":
            marker = "follows this JSON schema:\n"
            if marker not in prompt:
                raise ValueError("response_format json_object: the prompt must ask for JSON")
            kind, schema = "json_object", json.loads(prompt.split(marker)[-1].strip().splitlines()[0])
        elif extra:
            kind, schema = "vllm_" + next(iter(extra)), extra.get("json")
        else:
            return None
        if "choice" not in extra and "regex" not in extra:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"invalid JSON schema: {exc.message}") from None
        with self._lock:
            self.structured[kind] += 1
        own = self._own_answer(prompt, request)
        if own is not None:
            return own
        if "choice" in extra:
            return _pick(extra["choice"], prompt)
        if "regex" in extra:
            raise ValueError("the test server answers a regex only through answer()")
        return json.dumps(shaped_answer(schema, prompt), ensure_ascii=False)

    def _own_answer(self, prompt: str, request: dict) -> str | None:
        """The test's own answer when it has one, sent whether or not it fits (a test may answer off-shape)."""
        return self.answer(prompt, request) if self.answer is not None else None

    def _body(
        self,
        prompt: str,
        request: dict,
        chat: bool,
        refuse: bool = False,
        filtered: bool = False,
        shaped: str | None = None,
    ) -> dict:
        finish = "content_filter" if filtered or "[[filter]]" in prompt else "stop"
        if filtered:
            text = ""  # OpenAI stops the answer where the filter hit: here before its first word
        elif refuse:
            text = refusal_text(prompt)
        elif shaped is not None:
            text = shaped
        else:
            text = self.answer(prompt, request) if self.answer else fake_answer(prompt)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()), "total_tokens": 0}
        top = {" A": -0.3, " B": -1.6, " C": -2.5, " D": -3.1, "safe": -0.7, "unsafe": -0.9}
        if self.top_logprobs is not None and request.get("logprobs") not in (None, False):
            top = self.top_logprobs(prompt, request)
        if chat:
            message = {"role": "assistant", "content": text}
            if shaped is not None and "[[structured_refusal]]" in prompt:
                message = {"role": "assistant", "content": None, "refusal": refusal_text(prompt)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            if request.get("logprobs"):
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": "A",
                            "logprob": -0.3,
                            "bytes": None,
                            "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()],
                        }
                    ]
                }
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [choice],
                "usage": usage,
            }
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        if request.get("logprobs") is not None:
            if request.get("echo"):
                words = fake_tokens(prompt)
                logprobs = [None] + fake_token_logprobs(prompt)[1:] + [-1.0]
                choice["text"] = prompt + " x"
                choice["logprobs"] = {
                    "tokens": words + ["x"],
                    "token_logprobs": logprobs,
                    "top_logprobs": None,
                    "text_offset": None,
                }
                usage["prompt_tokens"] = len(words)
            else:
                choice["logprobs"] = {
                    "tokens": [" A"],
                    "token_logprobs": [-0.3],
                    "top_logprobs": [top],
                    "text_offset": [0],
                }
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": 0,
            "model": request["model"],
            "choices": [choice],
            "usage": usage,
        }


def _pick(options, prompt: str):
    digest = int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()[:4], "big")
    return list(options)[digest % len(options)]


def shaped_answer(schema: dict, prompt: str):
    """A value of the JSON schema's shape (the subset madef's output specs use), chosen by the prompt."""
    if "enum" in schema:
        return _pick(schema["enum"], prompt)
    kind = schema.get("type")
    if kind == "object":
        return {name: shaped_answer(sub, prompt + name) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        return [shaped_answer(schema.get("items", {}), f"{prompt}{i}") for i in range(count)]
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 10)
        value = low + (high - low) * _pick(range(101), prompt) / 100
        return round(value) if kind == "integer" else round(value, 2)
    if kind == "boolean":
        return _pick([True, False], prompt)
    if "pattern" in schema:
        raise ValueError("the test server answers a pattern only through answer()")
    words = re.findall(r"[A-Za-z]+|[\u4e00-\u9fff]", prompt) or ["x"]
    text = " ".join(words[-3:])[: schema.get("maxLength", 40)]
    return text.ljust(schema.get("minLength", 1), "x")


def expected_perplexity(text: str) -> float:
    values = fake_token_logprobs(text)[1:]
    return math.exp(-sum(values) / len(values))
