"""The Dagster resource for one LLM role: backend selection, the ledger, progress logging."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import Config, ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from madef_assets.llm.backends import backend_identity, build_backend
from madef_assets.llm.ledger import Ledger, LedgerWriter, canonical_json, ledger_key
from madef_assets.llm.refusals import answer_refusal
from madef_assets.llm.structured import OutputSpec, ParseError
from madef_assets.llm.types import Backend, CallKind, Completion, GenerationParams
from madef_assets.settings import AnyModel, OpenAIModel
from madef_assets.storage import DEFAULT_LOCK_WAIT_SECONDS, Storage

PROGRESS_EVERY_S = 10.0


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


def batches_metadata(batches: Sequence[LLMBatch]) -> dict[str, Any]:
    """Several batches' LLM metadata summed (rows, calls, ledger hits, seconds, statuses), the hit rate
    recomputed over them all."""
    totals: dict[str, Any] = {}
    for batch in batches:
        for key, value in batch.metadata().items():
            totals[key] = totals.get(key, 0) + value if key != "llm_ledger_hit_rate" else None
    calls = totals.get("llm_backend_calls", 0) + totals.get("llm_ledger_hits", 0)
    totals["llm_ledger_hit_rate"] = round(totals.get("llm_ledger_hits", 0) / calls, 4) if calls else 0.0
    return totals


def _decode_output(kind: CallKind, raw: str | None) -> Any:
    return raw if raw is None or kind == "generate" else json.loads(raw)


def structured_parser(spec: OutputSpec) -> Callable[[str], Any]:
    """The parser of an answer decoded under `spec`: its check, then its reader."""
    return lambda text: spec.read(spec.check(text))


class PanelMember(Config):
    """Another model of a role's panel (the judge may be several models)."""

    config: AnyModel


class LLMResource(ConfigurableResource):
    """One LLM role (labeler, attacker, responder, judge, scorer, trainee) as configured in the profile.

    Every call goes through the ledger: answers already in it are returned without a backend call.
    """

    role: str
    config: AnyModel
    panel_members: list[PanelMember] = []
    duckdb_path: str  # the storage (madef_assets/storage.py): a DuckDB file or ducklake:postgres:<conninfo>
    models_dir: str
    ducklake_data_path: str | None = None
    duckdb_lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS

    _backend: Backend | None = PrivateAttr(default=None)
    _identity: dict[str, Any] | None = PrivateAttr(default=None)
    _ledger: Ledger | None = PrivateAttr(default=None)
    _run_id: str | None = PrivateAttr(default=None)
    _others: list[LLMResource] | None = PrivateAttr(default=None)

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def model(self) -> str:
        return self.config.model

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._run_id = context.run_id if context.dagster_run else None
        for member in self.panel():
            key_env = member.config.api_key_env if isinstance(member.config, OpenAIModel) else None
            if key_env and not os.environ.get(key_env):
                # At the run's start, before any call: a missing key fails here, not as 401s midway.
                raise ValueError(
                    f"role {self.role} ({member.model}): the environment variable {key_env} (api_key_env) is not set"
                )

    def panel(self) -> list[LLMResource]:
        """This model and the other members of its panel (just this one when the role is a single model),
        each with its own ledger identity; the others share this resource's ledger file and run."""
        if self._others is None:
            self._others = [
                LLMResource(
                    role=self.role,
                    config=member.config,
                    **self.storage().resource_fields(),
                    models_dir=self.models_dir,
                )
                for member in self.panel_members
            ]
        for member in self._others:
            member._run_id = self._run_id
        return [self, *self._others]

    @property
    def default_params(self) -> GenerationParams:
        return GenerationParams.from_config(self.config.generation)

    def get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.backend, self.model, self.config.options, Path(self.models_dir))
        return self._backend

    def identity(self) -> dict[str, Any]:
        """The model's ledger identity, known without building the backend."""
        if self._identity is None:
            self._identity = backend_identity(self.backend, self.model, self.config.options, Path(self.models_dir))
        return self._identity

    def storage(self) -> Storage:
        return Storage(self.duckdb_path, self.ducklake_data_path, self.duckdb_lock_wait_seconds)

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.storage())
        return self._ledger

    # --- the three capabilities ---------------------------------------------------------------

    @property
    def structured(self) -> bool:
        """Whether this model's backend enforces output specs (its `structured_outputs` setting)."""
        return self.config.structured_outputs != "none"

    def generate(
        self,
        prompts: Sequence[str],
        template_version: str,
        params: GenerationParams | None = None,
        parse: Callable[[str], Any] | None = None,
        log: logging.Logger | None = None,
        refusals: bool = False,
        output: OutputSpec | None = None,
    ) -> LLMBatch:
        """`refusals`: an answer that opens with a refusal ("抱歉，我无法…", "I can't help…") is `refused`, not
        an answer — for roles whose output becomes data (labeler, attacker, judges); a candidate's refusal
        is its answer and stays `ok`. `output`: the answer's shape; when this model enforces it, the spec
        joins the ledger key, the backend decodes under it and the spec's check and reader replace `parse`;
        otherwise the free-text answer is read by `parse`."""
        params = params or self.default_params
        spec = output if output is not None and self.structured else None
        if spec:
            # A stop string would cut the JSON; a wrapped choice needs room for its object.
            params = params.with_changes(stop=(), max_new_tokens=max(params.max_new_tokens, spec.min_new_tokens()))
        enforced = {**spec.key(), "enforced_by": self.config.structured_outputs} if spec else None
        key_params = {**params.as_dict(), "output": enforced} if spec else params.as_dict()
        return self._call(
            "generate",
            prompts,
            template_version,
            key_params,
            lambda backend, todo: backend.generate(todo, params, spec) if spec else backend.generate(todo, params),
            structured_parser(spec) if spec else parse,
            log,
            refusals,
        )

    def option_logprobs(
        self, prompts: Sequence[str], options: Sequence[str], template_version: str, log: logging.Logger | None = None
    ) -> LLMBatch:
        return self._call(
            "option_logprobs",
            prompts,
            template_version,
            {"options": list(options)},
            lambda backend, todo: backend.option_logprobs(todo, options),
            None,
            log,
        )

    def perplexity(self, texts: Sequence[str], log: logging.Logger | None = None) -> LLMBatch:
        return self._call(
            "perplexity", texts, "perplexity-v1", {}, lambda backend, todo: backend.perplexity(todo), None, log
        )

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
        refusals: bool = False,
    ) -> LLMBatch:
        started = time.perf_counter()
        log = log or logging.getLogger(f"madef.llm.{self.role}")
        fingerprint = self.identity()
        call = _CallSpec(kind, self.backend, canonical_json(fingerprint), template_version, canonical_json(params))
        keys = [ledger_key(kind, self.backend, fingerprint, params, p, template_version) for p in prompts]
        unique: dict[str, str] = dict(zip(keys, prompts))
        answers = {k: {**row, "cached": True} for k, row in self.ledger().lookup(list(unique)).items()}
        hits = len(answers)
        todo = {k: prompt for k, prompt in unique.items() if k not in answers}
        log.info(
            f"{self.role}: {len(prompts)} rows, {len(unique)} distinct, {hits} from the ledger, {len(todo)} to send"
        )
        if todo:
            # Built only now: a step whose answers are all in the ledger loads no model.
            answers.update(self._send(self.get_backend(), call, todo, run, parse, log, hits))
        results = [self._result(kind, key, answers[key], parse, refusals) for key in keys]
        batch = LLMBatch(results, backend_calls=len(todo), cache_hits=hits, seconds=time.perf_counter() - started)
        log.info(f"{self.role}: finished in {batch.seconds:.1f}s, statuses {batch.status_counts()}")
        return batch

    def _send(
        self,
        backend: Backend,
        call: "_CallSpec",
        todo: dict[str, str],
        run: Callable[[Backend, list[str]], Any],
        parse: Callable[[str], Any] | None,
        log: logging.Logger,
        hits: int,
    ) -> dict[str, dict[str, Any]]:
        """Send the missing calls; finished ones go to the ledger writer's thread, which writes them in
        batches, and what is left is written also on interruption."""
        keys, prompts = list(todo), list(todo.values())
        answers: dict[str, dict[str, Any]] = {}
        with LedgerWriter(self.ledger()) as writer, _Progress(self.role, len(prompts), hits, log) as progress:
            for index, completion in run(backend, prompts):
                status, error, output = _finish(call.kind, completion, parse)
                answers[keys[index]] = {"output": output, "status": status, "error": error, "cached": False}
                writer.add(
                    call.ledger_row(
                        keys[index], self.role, prompts[index], output, status, error, completion, self._run_id
                    )
                )
                progress.step()
        return answers

    @staticmethod
    def _result(
        kind: CallKind, key: str, answer: dict[str, Any], parse: Callable[[str], Any] | None, refusals: bool = False
    ) -> LLMResult:
        """The caller's view of a ledger row; parsing runs again so a fixed parser needs no new calls."""
        value, status, error = None, answer["status"], answer["error"]
        if status in ("ok", "parse_error"):
            value = _decode_output(kind, answer["output"])
            opening = refusals and kind == "generate" and answer_refusal(value)
            if opening:
                return LLMResult(key, answer["output"], "refused", f"the model refused ({opening!r})", answer["cached"])
            if parse is not None and kind == "generate":
                try:
                    value, status, error = parse(value), "ok", None
                except ParseError as exc:
                    value, status, error = None, "parse_error", str(exc)
        return LLMResult(key, answer["output"], status, error, answer["cached"], value)


@dataclass(frozen=True)
class _CallSpec:
    kind: CallKind
    backend: str
    model_json: str
    template_version: str
    params_json: str

    def ledger_row(
        self,
        key: str,
        role: str,
        prompt: str,
        output: str | None,
        status: str,
        error: str | None,
        completion: Completion,
        run_id: str | None,
    ) -> dict[str, Any]:
        return {
            "key": key,
            "role": role,
            "kind": self.kind,
            "backend": self.backend,
            "model": self.model_json,
            "template_version": self.template_version,
            "params": self.params_json,
            "prompt": prompt,
            "output": output,
            "status": status,
            "error": error,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "latency_s": completion.latency_s,
            "run_id": run_id,
        }


class _Progress:
    """Logs done / total, rate, ETA and ledger hits every PROGRESS_EVERY_S seconds from a timer thread,
    so the run log shows where a long call is even while a slow batch produces no row."""

    def __init__(self, role: str, total: int, hits: int, log: logging.Logger):
        self.role, self.total, self.hits, self.log = role, total, hits, log
        self.done = 0
        self.started = time.perf_counter()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._report, name=f"progress-{role}", daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def step(self) -> None:
        self.done += 1

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed else 0.0
        eta = f"{(self.total - self.done) / rate:.0f}s" if rate else "unknown"
        return f"{self.role}: {self.done}/{self.total} calls done, {rate:.1f}/s, ETA {eta}, {self.hits} ledger hits"

    def _report(self) -> None:
        while not self._stopped.wait(PROGRESS_EVERY_S):
            self.log.info(self.line())


def _finish(
    kind: CallKind, completion: Completion, parse: Callable[[str], Any] | None
) -> tuple[str, str | None, str | None]:
    """(status, error, output text) to store for a fresh backend answer."""
    if completion.status != "ok":
        output = (
            completion.output
            if completion.output is None or isinstance(completion.output, str)
            else canonical_json(completion.output)
        )
        return completion.status, completion.error, output
    if kind != "generate":
        return "ok", None, json.dumps(completion.output)
    if parse is not None:
        try:
            parse(completion.output)
        except ParseError as exc:
            return "parse_error", str(exc), completion.output
    return "ok", None, completion.output
