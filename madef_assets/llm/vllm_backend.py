"""vLLM's in-process offline engine (optional extra `madef[vllm]`, GPU machines only).

Imported only when a role selects `backend: vllm`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

from madef_assets.llm.local_model import LocalModel
from madef_assets.llm.types import Completion, GenerationParams, Indexed


class VLLMBackend(LocalModel):
    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        model_spec: str,
        chat_template: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
    ):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("backend 'vllm' needs the optional extra: pip install 'madef[vllm]'") from exc
        self.engine = LLM(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
        )
        self.tokenizer = self.engine.get_tokenizer()
        self._init_local(model_path, model_spec, chat_template)

    def _token_prompts(self, texts: Sequence[str], add_special: bool) -> list[dict[str, list[int]]]:
        return [{"prompt_token_ids": self.tokenizer.encode(t, add_special_tokens=add_special)} for t in texts]

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> Indexed:
        from vllm import SamplingParams

        sampling = SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        started = time.perf_counter()
        outputs = self.engine.generate([self.render(p) for p in prompts], sampling, use_tqdm=False)
        elapsed = (time.perf_counter() - started) / max(len(prompts), 1)
        for index, output in enumerate(outputs):
            choice = output.outputs[0]
            yield index, Completion(
                output=choice.text,
                prompt_tokens=len(output.prompt_token_ids or []),
                completion_tokens=len(choice.token_ids),
                latency_s=elapsed,
            )

    def _prompt_logprobs(self, token_prompts: list[dict[str, list[int]]]) -> list[list[float]]:
        """Log-probability of every prompt token after the first, from vLLM's prompt_logprobs."""
        from vllm import SamplingParams

        sampling = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.engine.generate(token_prompts, sampling, use_tqdm=False)
        values = []
        for prompt, output in zip(token_prompts, outputs):
            ids = prompt["prompt_token_ids"]
            per_position = output.prompt_logprobs or []
            values.append([per_position[i][ids[i]].logprob for i in range(1, len(ids)) if per_position[i]])
        return values

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> Indexed:
        started = time.perf_counter()
        rendered = [self.render(p) for p in prompts]
        add_special = not self.use_chat_template
        contexts = [self.tokenizer.encode(r, add_special_tokens=add_special) for r in rendered]
        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) for o in options]
        pairs = [(i, j) for i in range(len(prompts)) for j in range(len(options))]
        logprobs = self._prompt_logprobs([{"prompt_token_ids": contexts[i] + option_ids[j]} for i, j in pairs])
        elapsed = (time.perf_counter() - started) / max(len(prompts), 1)
        scores: dict[int, dict[str, float]] = {}
        for (i, j), values in zip(pairs, logprobs):
            length = len(option_ids[j])
            scores.setdefault(i, {})[options[j]] = sum(values[-length:]) if length else math.nan
        for i in range(len(prompts)):
            if any(math.isnan(v) for v in scores[i].values()):
                yield i, Completion.failed("option has no tokens", elapsed)
            else:
                yield i, Completion(output=scores[i], latency_s=elapsed)

    def perplexity(self, texts: Sequence[str]) -> Indexed:
        started = time.perf_counter()
        logprobs = self._prompt_logprobs(self._token_prompts(texts, add_special=True))
        elapsed = (time.perf_counter() - started) / max(len(texts), 1)
        for index, values in enumerate(logprobs):
            if not values:
                yield index, Completion.failed("text has fewer than two tokens", elapsed)
            else:
                yield index, Completion(output=math.exp(-sum(values) / len(values)), prompt_tokens=len(values) + 1, latency_s=elapsed)

    def close(self) -> None:
        del self.engine
