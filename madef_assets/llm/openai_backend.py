"""Any OpenAI-compatible server: bounded concurrency, retries with exponential backoff and full jitter
on 429/5xx/timeouts/malformed bodies (honouring Retry-After), a request budget per run, and several
replicas of one model (a list of base URLs): requests spread round-robin, and a replica that fails is
skipped for a cooldown while the others take its requests. Transport: aiohttp (default) or the official
`openai` client (openai_transport.py)."""

from __future__ import annotations

import asyncio
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from madef_assets.llm.openai_transport import (
    AiohttpClient,
    HTTPStatusError,
    MalformedResponse,
    SdkClient,
    TransportConnectionError,
    TransportTimeout,
    make_client,
)
from madef_assets.llm.structured import OutputSpec, ParseError
from madef_assets.llm.types import Completion, GenerationParams, Indexed
from madef_assets.secret_hygiene import mask_secrets, openai_endpoint_problems

STRUCTURED_MODES = ("json_schema", "json_object", "vllm", "none")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# Error codes with which providers refuse a request on content grounds (DashScope's compatible mode and
# native API, OpenAI, Azure OpenAI). Such an answer is final: stored as `refused`, never sent again.
MODERATION_CODES = {
    "data_inspection_failed",
    "datainspectionfailed",
    "content_policy_violation",
    "content_filter",
    "responsibleaipolicyviolation",
}


def is_moderation(status: int, code: str | None) -> bool:
    return status in (400, 403) and code is not None and code.lower() in MODERATION_CODES


Client = AiohttpClient | SdkClient


def refuse_unsafe_endpoints(model: str, options: dict[str, Any]) -> None:
    """Before any connection: no credentials in a base_url, no key over http:// to a non-loopback host."""
    problems = openai_endpoint_problems(options)
    if problems:
        raise ValueError(f"model {model!r}: base_url " + "; ".join(problems))


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if the server sent one."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(cap, base * (2**attempt)))


class ReplicaPool:
    """Round-robin over replicas; one that failed (connection error, timeout, 429, 5xx) is skipped until
    its cooldown ends. When every replica is cooling down, the one that recovers first is used."""

    def __init__(self, count: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.available_at = [0.0] * count
        self.requests = [0] * count
        self.failures = [0] * count
        self._next = 0

    def pick(self) -> int:
        now = self.clock()
        count = len(self.available_at)
        for step in range(count):
            index = (self._next + step) % count
            if self.available_at[index] <= now:
                self._next = index + 1
                self.requests[index] += 1
                return index
        index = min(range(count), key=lambda i: self.available_at[i])
        self.requests[index] += 1
        return index

    def failed(self, index: int, wait_s: float | None = None) -> None:
        self.failures[index] += 1
        self.available_at[index] = self.clock() + max(self.cooldown_s, wait_s or 0.0)

    def any_available(self) -> bool:
        return min(self.available_at) <= self.clock()


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str],
        api_key_env: str | None = "OPENAI_API_KEY",
        api: str = "chat",
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        request_budget: int | None = None,
        model_revision: str | None = None,
        seed: int = 0,
        replica_cooldown_s: float = 30.0,
        transport: str = "aiohttp",
        allow_insecure_http: bool = False,
        structured_outputs: str = "none",
    ):
        if structured_outputs not in STRUCTURED_MODES:
            raise ValueError(f"structured_outputs must be one of {list(STRUCTURED_MODES)}, got {structured_outputs!r}")
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if api_key_env and not os.environ.get(api_key_env):
            # Before any call: a missing key would otherwise surface as thousands of 401 errors.
            raise ValueError(
                f"model {model!r}: the environment variable {api_key_env} (api_key_env) is not set; "
                "export the provider's key under that name, or set api_key_env: null for a server without keys"
            )
        self.model = model
        self.base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not self.base_urls:
            raise ValueError(f"backend openai for model {model!r}: base_url is an empty list")
        refuse_unsafe_endpoints(
            model, {"base_url": self.base_urls, "api_key_env": api_key_env, "allow_insecure_http": allow_insecure_http}
        )
        self.replicas = ReplicaPool(len(self.base_urls), replica_cooldown_s)
        self.api_key_env = api_key_env
        self.allow_insecure_http = allow_insecure_http
        self.transport = transport
        self.api = api
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.request_budget = request_budget
        self.model_revision = model_revision
        self.structured_outputs = structured_outputs
        self.requests_sent = 0
        self.retries = 0
        self._rng = random.Random(seed)

    @classmethod
    def from_options(cls, model: str, options: dict[str, Any]) -> OpenAIBackend:
        """The backend for a role's options (checked against this constructor by the profile schema)."""
        if "base_url" not in options:
            raise ValueError(f"backend openai for model {model!r} needs base_url")
        return cls(model=model, **options)

    @staticmethod
    def identity(model: str, options: dict[str, Any]) -> dict[str, Any]:
        """The ledger identity of answers from these options (what `fingerprint` returns); refused for an
        endpoint whose URL carries credentials, which would be stored with every answer."""
        refuse_unsafe_endpoints(model, options)
        base_url = options.get("base_url")
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        # Replicas serve one model, so which (and how many) answer does not change the ledger key.
        return {
            "model": model,
            "revision": options.get("model_revision"),
            "base_url": urls[0] if len(urls) == 1 else "replicas",
            "api": options.get("api", "chat"),
        }

    def fingerprint(self) -> dict[str, Any]:
        return self.identity(
            self.model,
            {
                "base_url": self.base_urls,
                "model_revision": self.model_revision,
                "api": self.api,
                "api_key_env": self.api_key_env,
                "allow_insecure_http": self.allow_insecure_http,
            },
        )

    def _client(self, base_url: str) -> Client:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return make_client(self.transport, base_url, key or "not-needed", self.timeout_s, self.concurrency)

    async def _with_retries(self, clients: list[Client], call: Callable[[Client], Awaitable[Completion]]) -> Completion:
        """The call's completion after retries, its error text with the key and key-like strings masked
        (a provider's error body may echo the key)."""
        completion = await self._attempts(clients, call)
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        completion.error = mask_secrets(completion.error, [key])
        return completion

    async def _attempts(self, clients: list[Client], call: Callable[[Client], Awaitable[Completion]]) -> Completion:
        started = time.perf_counter()
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if self.request_budget is not None and self.requests_sent >= self.request_budget:
                return Completion.failed(
                    f"request budget of {self.request_budget} exhausted ({last_error})", time.perf_counter() - started
                )
            self.requests_sent += 1
            wait = None
            replica = self.replicas.pick()
            try:
                result = await call(clients[replica])
                result.latency_s = time.perf_counter() - started
                result.extra["attempts"] = attempt + 1
                return result
            except HTTPStatusError as exc:
                last_error = f"HTTP {exc.status}: {exc.message}"
                if is_moderation(exc.status, exc.code):
                    return Completion(
                        status="refused",
                        error=f"provider moderation ({exc.code}): {exc.message}",
                        latency_s=time.perf_counter() - started,
                        extra={"attempts": attempt + 1},
                    )
                if exc.status not in RETRYABLE_STATUS:
                    return Completion.failed(last_error, time.perf_counter() - started)
                wait = retry_after_seconds(exc.headers)
            except TransportTimeout:
                last_error = f"timeout after {self.timeout_s}s"
            except TransportConnectionError as exc:
                last_error = f"connection error: {exc}"
            except (MalformedResponse, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                last_error = f"malformed response: {type(exc).__name__}: {str(exc)[:300]}"
            if attempt == self.max_retries:
                break
            self.retries += 1
            if len(clients) > 1:
                self.replicas.failed(replica, wait)
                if self.replicas.any_available():
                    continue  # another replica takes the retry at once
            delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self._rng)
            await asyncio.sleep(max(delay, wait or 0.0))
        return Completion.failed(
            f"gave up after {self.max_retries + 1} attempts: {last_error}", time.perf_counter() - started
        )

    def _run(self, count: int, make_call: Callable[[Client, int], Awaitable[Completion]]) -> Indexed:
        """Run count calls concurrently in a worker thread; yield results as they complete."""
        results: queue.Queue = queue.Queue()
        done = object()

        async def main() -> None:
            semaphore = asyncio.Semaphore(self.concurrency)
            clients = [self._client(url) for url in self.base_urls]

            async def one(index: int) -> None:
                async with semaphore:
                    completion = await self._with_retries(clients, lambda client: make_call(client, index))
                results.put((index, completion))

            try:
                await asyncio.gather(*(one(i) for i in range(count)))
            finally:
                for client in clients:
                    await client.close()

        def worker() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced in the consuming thread
                results.put(exc)
            finally:
                results.put(done)

        thread = threading.Thread(target=worker, name="openai-backend", daemon=True)
        thread.start()
        while True:
            item = results.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()

    # --- request shapes -------------------------------------------------------------------------

    def _sampling(self, params: GenerationParams) -> dict[str, Any]:
        values: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            values["seed"] = params.seed
        if params.stop:
            values["stop"] = list(params.stop)
        return values

    def _request(self, prompt: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        """(path, payload) of a chat or completions request for one prompt."""
        if self.api == "chat":
            return "/chat/completions", {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                **fields,
            }
        return "/completions", {"model": self.model, "prompt": prompt, **fields}

    def _shape(self, output: OutputSpec | None) -> tuple[str, dict[str, Any]]:
        """(text added to the prompt, request fields) that ask the endpoint for `output`'s shape."""
        if output is None or self.structured_outputs == "none":
            return "", {}
        if self.structured_outputs == "vllm":
            shape = {"json_schema": ("json", output.schema), "choice": ("choice", list(output.choices))}
            field, value = shape.get(output.kind, ("regex", output.pattern))
            return "", {"structured_outputs": {field: value}}
        if self.structured_outputs == "json_object":
            return output.instruction(), {"response_format": {"type": "json_object"}}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", output.name)[:64]
        schema = {"name": name, "schema": output.as_json_schema(), "strict": True}
        return "", {"response_format": {"type": "json_schema", "json_schema": schema}}

    def _answer(self, text: str, output: OutputSpec | None) -> str:
        """The answer's text: a choice or regex asked as a JSON object is taken out of it (kept whole when
        it is not that object, for the check to say why)."""
        if output is None or self.structured_outputs in ("none", "vllm"):
            return text
        try:
            return output.unwrap(text)
        except ParseError:
            return text

    def generate(self, prompts: Sequence[str], params: GenerationParams, output: OutputSpec | None = None) -> Indexed:
        sampling = self._sampling(params)
        suffix, shape = self._shape(output)

        async def call(client: Client, index: int) -> Completion:
            response = await client.post(*self._request(prompts[index] + suffix, **sampling, **shape))
            choice = _first_choice(response)
            message = choice.get("message") or {}
            text = message.get("content") if self.api == "chat" else choice.get("text")
            if message.get("refusal"):
                # OpenAI's structured outputs: the model declined, in `refusal` instead of the schema.
                return Completion(
                    output=message["refusal"], status="refused", error="the model refused", **_usage(response)
                )
            if choice.get("finish_reason") == "content_filter":
                return Completion(
                    output=text or "",
                    status="refused",
                    error="provider moderation (finish_reason content_filter)",
                    **_usage(response),
                )
            if not isinstance(text, str):
                raise MalformedResponse("choice has no text")
            return Completion(output=self._answer(text, output), **_usage(response))

        return self._run(len(prompts), call)

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> Indexed:
        """Next-token log-probabilities of each option after the raw prompt, through completions (options
        must be single tokens for the server). An option missing from the server's top-20 gets -inf."""
        if self.api != "completions":
            raise ValueError(
                f"option log-probabilities of model {self.model!r} need api: completions: through api: chat the "
                "server's chat template would wrap the prompt, and the scores would not be those of the raw prompt "
                "(a vLLM server offers both; for a chat-only provider leave log-prob tasks out)"
            )
        fields = {"max_tokens": 1, "temperature": 0.0, "logprobs": 20}

        async def call(client: Client, index: int) -> Completion:
            response = await client.post(*self._request(prompts[index], **fields))
            top = dict(_first_choice(response)["logprobs"]["top_logprobs"][0])
            scores = {}
            for option in options:
                matches = [v for token, v in top.items() if token.strip() == option.strip()]
                scores[option] = max(matches) if matches else -math.inf
            return Completion(output=scores, **_usage(response))

        return self._run(len(prompts), call)

    def perplexity(self, texts: Sequence[str]) -> Indexed:
        """Prompt log-probabilities through completions with echo (vLLM's server supports it)."""
        if self.api != "completions":
            raise ValueError("perplexity over the openai backend needs api: completions (echo + logprobs)")

        async def call(client: Client, index: int) -> Completion:
            response = await client.post(
                "/completions",
                {
                    "model": self.model,
                    "prompt": texts[index],
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "echo": True,
                    "logprobs": 0,
                },
            )
            usage = _usage(response)
            token_logprobs = _first_choice(response)["logprobs"]["token_logprobs"]
            prompt_count = usage.get("prompt_tokens") or len(token_logprobs) - 1
            scored = [lp for lp in token_logprobs[:prompt_count] if lp is not None]
            if not scored:
                return Completion.failed("text has fewer than two tokens")
            return Completion(output=math.exp(-sum(scored) / len(scored)), **usage)

        return self._run(len(texts), call)

    def close(self) -> None:
        pass


def _first_choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices")
    return choices[0]


def _usage(response: dict[str, Any]) -> dict[str, Any]:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return {}
    return {"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}
