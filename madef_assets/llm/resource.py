"""The Dagster resource for one LLM role: backend selection, the ledger, progress logging."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from madef_assets.llm.ledger import Ledger, canonical_json, ledger_key
from madef_assets.llm.types import FINAL_STATUSES, Backend, CallKind, Completion, GenerationParams

PROGRESS_EVERY_S = 10.0
FLUSH_ROWS = 64
FLUSH_SECONDS = 5.0

_heavy_backends: dict[str, Backend] = {}
_heavy_lock = threading.Lock()


class ParseError(ValueError):
    """A model answer that does not have the expected form; stored as status parse_error."""


def build_backend(backend: str, model: str, options: dict[str, Any], models_dir: Path) -> Backend:
    """A backend instance. Local-model backends are loaded once per process and shared."""
    if backend == "openai":
        from madef_assets.llm.openai_backend import OpenAIBackend

        if "base_url" not in options:
            raise ValueError(f"backend openai for model {model!r} needs base_url")
        allowed = set(OpenAIBackend.__init__.__code__.co_varnames) - {"self", "model"}
        return OpenAIBackend(model=model, **{k: v for k, v in options.items() if k in allowed})
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"unknown backend {backend!r}: transformers, openai or vllm")
    cache_key = canonical_json([backend, model, options])
    with _heavy_lock:
        if cache_key not in _heavy_backends:
            from madef_assets.llm.model_files import resolve_model_path

            path = resolve_model_path(model, models_dir)
            if backend == "transformers":
                from madef_assets.llm.transformers_backend import TransformersBackend

                keys = ("batch_size", "device", "chat_template", "dtype")
                _heavy_backends[cache_key] = TransformersBackend(path, model, **{k: options[k] for k in keys if k in options})
            else:
                from madef_assets.llm.vllm_backend import VLLMBackend

                keys = ("chat_template", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "seed")
                _heavy_backends[cache_key] = VLLMBackend(path, model, **{k: options[k] for k in keys if k in options})
        return _heavy_backends[cache_key]


@dataclass
class LLMResult:
    key: str
    output: Any
    status: str
    error: str | None
    cached: bool
    value: Any = None


@dataclass
class LLMBatch:
    results: list[LLMResult]
    backend_calls: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def metadata(self) -> dict[str, Any]:
        distinct = self.backend_calls + self.cache_hits
        return {
            "llm_rows": len(self.results),
            "llm_backend_calls": self.backend_calls,
            "llm_ledger_hits": self.cache_hits,
            "llm_ledger_hit_rate": round(self.cache_hits / distinct, 4) if distinct else 0.0,
            "llm_seconds": round(self.seconds, 2),
            **{f"llm_status_{k}": v for k, v in sorted(self.status_counts().items())},
        }


def _decode_output(kind: CallKind, raw: str | None) -> Any:
    return raw if raw is None or kind == "generate" else json.loads(raw)


class LLMResource(ConfigurableResource):
    """One LLM role (labeler, attacker, responder, judge, scorer, trainee) as configured in the profile.

    Every call goes through the ledger: answers already in it are returned without a backend call.
    """

    role: str
    backend: str
    model: str
    params_json: str = "{}"
    options_json: str = "{}"
    duckdb_path: str
    models_dir: str

    _backend: Backend | None = PrivateAttr(default=None)
    _ledger: Ledger | None = PrivateAttr(default=None)
    _run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run_id = context.run_id if context.dagster_run else None

    @property
    def default_params(self) -> GenerationParams:
        return GenerationParams.from_config(json.loads(self.params_json))

    def get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.backend, self.model, json.loads(self.options_json), Path(self.models_dir))
        return self._backend

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.duckdb_path)
        return self._ledger

    # --- the three capabilities ---------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        template_version: str,
        params: GenerationParams | None = None,
        parse: Callable[[str], Any] | None = None,
        log: logging.Logger | None = None,
    ) -> LLMBatch:
        params = params or self.default_params
        return self._call(
            "generate", prompts, template_version, params.as_dict(),
            lambda backend, todo: backend.generate(todo, params), parse, log,
        )

    def option_logprobs(
        self, prompts: Sequence[str], options: Sequence[str], template_version: str, log: logging.Logger | None = None
    ) -> LLMBatch:
        return self._call(
            "option_logprobs", prompts, template_version, {"options": list(options)},
            lambda backend, todo: backend.option_logprobs(todo, options), None, log,
        )

    def perplexity(self, texts: Sequence[str], log: logging.Logger | None = None) -> LLMBatch:
        return self._call("perplexity", texts, "perplexity-v1", {}, lambda backend, todo: backend.perplexity(todo), None, log)

    # --- ledger-backed execution --------------------------------------------------------------

    def _call(
        self,
        kind: CallKind,
        prompts: Sequence[str],
        template_version: str,
        params: dict[str, Any],
        run: Callable[[Backend, list[str]], Any],
        parse: Callable[[str], Any] | None,
        log: logging.Logger | None,
    ) -> LLMBatch:
        started = time.perf_counter()
        log = log or logging.getLogger(f"madef.llm.{self.role}")
        backend = self.get_backend()
        fingerprint = backend.fingerprint()
        keys = [ledger_key(kind, backend.name, fingerprint, params, p, template_version) for p in prompts]
        unique: dict[str, str] = dict(zip(keys, prompts))
        ledger = self.ledger()
        found = ledger.lookup(list(unique))
        todo_keys = [k for k in unique if k not in found]
        todo_prompts = [unique[k] for k in todo_keys]
        answers: dict[str, dict[str, Any]] = {k: {**row, "cached": True} for k, row in found.items()}
        log.info(f"{self.role}: {len(prompts)} rows, {len(unique)} distinct, {len(found)} from the ledger, {len(todo_keys)} to send")

        pending: list[dict[str, Any]] = []
        last_flush = last_progress = time.perf_counter()
        done = 0
        model_json = canonical_json(fingerprint)
        params_json = canonical_json(params)

        def flush() -> None:
            nonlocal last_flush
            ledger.write(pending)
            pending.clear()
            last_flush = time.perf_counter()

        try:
            for index, completion in run(backend, todo_prompts) if todo_prompts else ():
                key = todo_keys[index]
                status, error, output = self._finish(kind, completion, parse)
                answers[key] = {"output": output, "status": status, "error": error, "cached": False}
                pending.append({
                    "key": key, "role": self.role, "kind": kind, "backend": backend.name, "model": model_json,
                    "template_version": template_version, "params": params_json, "prompt": todo_prompts[index],
                    "output": output, "status": status, "error": error,
                    "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                    "latency_s": completion.latency_s, "run_id": self._run_id,
                })
                done += 1
                now = time.perf_counter()
                if len(pending) >= FLUSH_ROWS or now - last_flush >= FLUSH_SECONDS:
                    flush()
                if now - last_progress >= PROGRESS_EVERY_S:
                    rate = done / (now - started)
                    eta = (len(todo_prompts) - done) / rate if rate else float("inf")
                    log.info(
                        f"{self.role}: {done}/{len(todo_prompts)} sent calls done, {rate:.1f}/s, "
                        f"ETA {eta:.0f}s, {len(found)} ledger hits"
                    )
                    last_progress = now
        finally:
            # Also on interruption (run terminated, KeyboardInterrupt): keep every finished call.
            flush()

        results = []
        for key in keys:
            answer = answers[key]
            value, status, error = None, answer["status"], answer["error"]
            if status in ("ok", "parse_error"):
                value = _decode_output(kind, answer["output"])
                if parse is not None and kind == "generate":
                    try:
                        value, status, error = parse(value), "ok", None
                    except ParseError as exc:
                        value, status, error = None, "parse_error", str(exc)
            results.append(LLMResult(key, answer["output"], status, error, answer["cached"], value))
        batch = LLMBatch(results, backend_calls=len(todo_keys), cache_hits=len(found), seconds=time.perf_counter() - started)
        log.info(f"{self.role}: finished in {batch.seconds:.1f}s, statuses {batch.status_counts()}")
        return batch

    @staticmethod
    def _finish(kind: CallKind, completion: Completion, parse: Callable[[str], Any] | None) -> tuple[str, str | None, str | None]:
        if completion.status != "ok":
            output = completion.output if isinstance(completion.output, str) or completion.output is None else canonical_json(completion.output)
            return completion.status, completion.error, output
        if kind != "generate":
            return "ok", None, json.dumps(completion.output)
        if parse is not None:
            try:
                parse(completion.output)
            except ParseError as exc:
                return "parse_error", str(exc), completion.output
        return "ok", None, completion.output
