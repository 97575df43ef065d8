"""vLLM's in-process offline engine (optional extra `madef[vllm]`, GPU machines only).

Imported only when a role selects `backend: vllm`. The engine is loaded on first use and shared through
ENGINES: one engine per weights, whatever each role's chat-template use. madef renders and tokenizes
every prompt itself and hands vLLM token ids, so a chat template's BOS is never doubled. Work goes to the
engine in chunks of `chunk_size` prompts and results are yielded per chunk, so progress, ledger flushes
and kill-and-resume work as on the other backends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from madef_assets.llm.engines import ENGINES
from madef_assets.llm.local_model import VLLM_IDENTITY, LocalModel
from madef_assets.llm.structured import OutputSpec
from madef_assets.llm.types import Completion, GenerationParams, Indexed


def _load_engine(model_path: Path, options: dict[str, Any]) -> Any:
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError("backend 'vllm' needs the optional extra: pip install 'madef[vllm]'") from exc
    return LLM(model=str(model_path), **options)


def shutdown_engine(engine: Any) -> None:
    """Stop the engine core (its worker process, if any) and leave no distributed state behind, so the
    next engine of this process starts clean; ENGINES then drops the engine and empties the CUDA cache."""
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    engine.llm_engine.engine_core.shutdown()
    destroy_model_parallel()
    destroy_distributed_environment()


def structured_outputs_params(output: OutputSpec) -> Any:
    """vLLM's structured-output sampling parameters for an output spec (a JSON schema, a choice or a regex)."""
    from vllm.sampling_params import StructuredOutputsParams

    if output.kind == "json_schema":
        return StructuredOutputsParams(json=dict(output.schema or {}))
    if output.kind == "choice":
        return StructuredOutputsParams(choice=list(output.choices))
    return StructuredOutputsParams(regex=output.pattern)


class VLLMBackend(LocalModel):
    name = "vllm"
    identity_extra = VLLM_IDENTITY

    def __init__(
        self,
        model_path: Path,
        model_spec: str,
        chat_template: str = "auto",
        chunk_size: int = 1024,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enforce_eager: bool = False,
        attention_backend: str | None = None,
        structured_outputs: str = "none",
    ):
        self.structured_outputs = structured_outputs
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self._init_local(model_path, model_spec, chat_template)
        self.chunk_size = chunk_size
        self.engine_options: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "dtype": dtype,
            "seed": seed,
            "enforce_eager": enforce_eager,
        }
        if attention_backend is not None:
            self.engine_options["attention_backend"] = attention_backend
        self.engine_key = ("vllm", str(self.model_path))

    @property
    def engine(self) -> Any:
        """Loaded on first use (answers found in the ledger never need it), shared through ENGINES."""
        return ENGINES.get(
            self.engine_key,
            self.engine_options,
            lambda: _load_engine(self.model_path, self.engine_options),
            shutdown_engine,
            on_gpu=True,
        )

    def _chunks(self, count: int) -> Iterator[range]:
        for first in range(0, count, self.chunk_size):
            yield range(first, min(first + self.chunk_size, count))

    def generate(self, prompts: Sequence[str], params: GenerationParams, output: OutputSpec | None = None) -> Indexed:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampling = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
            **({"structured_outputs": structured_outputs_params(output)} if output is not None else {}),
        )
        for chunk in self._chunks(len(prompts)):
            started = time.perf_counter()
            token_prompts = [TokensPrompt(prompt_token_ids=self.prompt_ids(prompts[i])) for i in chunk]
            outputs = self.engine.generate(token_prompts, sampling, use_tqdm=False)
            elapsed = (time.perf_counter() - started) / len(chunk)
            for index, output in zip(chunk, outputs):
                choice = output.outputs[0]
                yield (
                    index,
                    Completion(
                        output=choice.text,
                        prompt_tokens=len(output.prompt_token_ids or []),
                        completion_tokens=len(choice.token_ids),
                        latency_s=elapsed,
                    ),
                )

    def _prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Log-probability of every token after the first of each id sequence (vLLM's prompt_logprobs)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not sequences:
            return []
        sampling = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.engine.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in sequences], sampling, use_tqdm=False
        )
        values = []
        for ids, output in zip(sequences, outputs):
            per_position = output.prompt_logprobs or []
            values.append([per_position[i][ids[i]].logprob for i in range(1, len(ids)) if per_position[i]])
        return values

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> Indexed:
        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) for o in options]
        for chunk in self._chunks(len(prompts)):
            started = time.perf_counter()
            contexts = {i: self.prompt_ids(prompts[i]) for i in chunk}
            pairs = [(i, j) for i in chunk for j in range(len(options))]
            logprobs = self._prompt_logprobs([contexts[i] + option_ids[j] for i, j in pairs])
            elapsed = (time.perf_counter() - started) / len(chunk)
            scores: dict[int, dict[str, float]] = {i: {} for i in chunk}
            for (i, j), values in zip(pairs, logprobs):
                length = len(option_ids[j])
                scores[i][options[j]] = sum(values[-length:]) if length and len(values) >= length else math.nan
            for i in chunk:
                if any(math.isnan(v) for v in scores[i].values()):
                    yield i, Completion.failed("option or prompt has no tokens", elapsed)
                else:
                    yield i, Completion(output=scores[i], latency_s=elapsed)

    def perplexity(self, texts: Sequence[str]) -> Indexed:
        for chunk in self._chunks(len(texts)):
            started = time.perf_counter()
            logprobs = self._prompt_logprobs([self.tokenizer.encode(texts[i], add_special_tokens=True) for i in chunk])
            elapsed = (time.perf_counter() - started) / len(chunk)
            for index, values in zip(chunk, logprobs):
                if not values:
                    yield index, Completion.failed("text has fewer than two tokens", elapsed)
                else:
                    yield (
                        index,
                        Completion(
                            output=math.exp(-sum(values) / len(values)),
                            prompt_tokens=len(values) + 1,
                            latency_s=elapsed,
                        ),
                    )

    def close(self) -> None:
        ENGINES.release(self.engine_key)
