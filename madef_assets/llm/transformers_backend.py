"""Local Hugging Face models through transformers: batched, length-sorted, chat template optional."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from madef_assets.llm.engines import ENGINES
from madef_assets.llm.grammar import Grammars
from madef_assets.llm.local_model import LocalModel
from madef_assets.llm.structured import OutputSpec
from madef_assets.llm.types import Completion, GenerationParams, Indexed

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def right_padded(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) for token lists, padded on the right to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


@dataclass(frozen=True)
class OutputHead:
    """A causal LM's output projection as plain tensors: logits = softcap(states @ weight.T + bias)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    softcap: float | None = None

    def _finish(self, logits: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is not None:
            logits.add_(bias)
        if self.softcap is not None:
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self._finish(states.float() @ self.weight.float().t(), self.bias)

    def token_nll(self, states: torch.Tensor, targets: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """-log softmax(logits(state))[target] for each row, in fp32. The projection runs one vocabulary
        chunk at a time into one reused buffer with a running log-sum-exp, so the (rows x vocabulary)
        logits never exist: with a 262k vocabulary they would be most of the memory traffic."""
        states = states.float()
        rows, vocab = states.shape[0], self.weight.shape[0]
        running_max = torch.full((rows,), -math.inf, device=states.device)
        running_sum = torch.zeros(rows, device=states.device)
        buffer = torch.empty(rows * min(chunk, vocab), device=states.device)
        for start in range(0, vocab, chunk):
            end = min(start + chunk, vocab)
            logits = buffer[: rows * (end - start)].view(rows, end - start)
            torch.mm(states, self.weight[start:end].float().t(), out=logits)
            self._finish(logits, None if self.bias is None else self.bias[start:end].float())
            new_max = torch.maximum(running_max, logits.amax(dim=1))
            running_sum = running_sum * torch.exp(running_max - new_max) + logits.sub_(new_max[:, None]).exp_().sum(
                dim=1
            )
            running_max = new_max
        target_logits = (states * self.weight[targets].float()).sum(dim=1)[:, None]
        target_logits = self._finish(target_logits, None if self.bias is None else self.bias[targets].float()[:, None])[
            :, 0
        ]
        return running_max + running_sum.log() - target_logits


def output_head(model: torch.nn.Module) -> OutputHead | None:
    """The model's output projection, when applying it to the decoder's last hidden state gives the
    model's own logits (checked on a probe); None for heads that do something else (scaling, extra
    layers), which then go through the full forward pass."""
    projection, decoder = model.get_output_embeddings(), model.get_decoder()
    if not isinstance(projection, torch.nn.Linear) or decoder is model:
        return None
    head = OutputHead(projection.weight, projection.bias, getattr(model.config, "final_logit_softcapping", None))
    probe = torch.arange(1, 9, device=projection.weight.device)[None] % model.config.vocab_size
    expected = model(input_ids=probe, use_cache=False).logits[0].float()
    states = decoder(input_ids=probe, use_cache=False).last_hidden_state[0]
    tolerance = max(1e-3, 8 * torch.finfo(projection.weight.dtype).eps) * float(expected.abs().max())
    return head if torch.allclose(head.logits(states), expected, rtol=0, atol=tolerance) else None


class LoadedWeights:
    """One model's weights on one device, shared by every role that uses them (roles differ only in
    batch size, chat-template use or sampling), with its output head once looked at."""

    def __init__(self, path: Path, device: str, dtype: torch.dtype):
        self.module = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()

    @cached_property
    def head(self) -> OutputHead | None:
        with torch.inference_mode():
            return output_head(self.module)


def _drop_weights(weights: LoadedWeights) -> None:
    weights.module = None
    weights.__dict__.pop("head", None)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


class TransformersBackend(LocalModel):
    name = "transformers"

    def __init__(
        self,
        model_path: Path,
        model_spec: str,
        batch_size: int = 8,
        device: str = "auto",
        chat_template: str = "auto",
        dtype: str = "auto",
        structured_outputs: str = "none",
    ):
        if dtype not in DTYPES:
            raise ValueError(f"{model_spec}: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.batch_size = batch_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self._torch_dtype = DTYPES[dtype] or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._init_local(model_path, model_spec, chat_template)
        self.engine_key = ("transformers", str(self.model_path), self.device, str(self._torch_dtype))
        self.structured_outputs = structured_outputs
        self.grammars = Grammars(self.tokenizer)

    @property
    def weights(self) -> LoadedWeights:
        """Loaded on first use (answers found in the ledger never need them), shared through ENGINES."""
        return ENGINES.get(
            self.engine_key,
            {},
            lambda: LoadedWeights(self.model_path, self.device, self._torch_dtype),
            _drop_weights,
            on_gpu=self.device.startswith("cuda"),
        )

    @property
    def model(self) -> torch.nn.Module:
        return self.weights.module

    @property
    def vocab_size(self) -> int:
        """The width of the model's logits (padded past the tokenizer's vocabulary in some models)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def head(self) -> OutputHead | None:
        return self.weights.head

    def _token_nll(self, ids: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
        """-log P(token t+1 | tokens up to t) for every position t where `scored` (batch x length-1) is
        set, in row-major order. Only those positions go through the output projection."""
        ids, mask, scored = ids.to(self.device), mask.to(self.device), scored.to(self.device)
        targets = ids[:, 1:][scored]
        if self.head is None:
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            return torch.nn.functional.cross_entropy(logits[:, :-1][scored].float(), targets, reduction="none")
        states = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return self.head.token_nll(states[:, :-1][scored], targets)

    def _encode(self, texts: Sequence[str], side: str) -> dict[str, torch.Tensor]:
        self.tokenizer.padding_side = side
        # A chat template already starts with the BOS token, so do not add another one.
        batch = self.tokenizer(
            list(texts), return_tensors="pt", padding=True, add_special_tokens=not self.use_chat_template
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def _lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: Sequence[str], params: GenerationParams, output: OutputSpec | None = None) -> Indexed:
        """Free text, or text in `output`'s shape: a closed choice by the log-likelihood of each option (the
        most likely one is the answer, every option's score kept in `extra`), a JSON schema or a regex by a
        grammar-constrained logits processor (stop strings then do not apply: the grammar ends the answer)."""
        if output is not None and output.kind == "choice":
            if not any(a != b and b.startswith(a) for a in output.choices for b in output.choices):
                return self._choose(prompts, output.choices)
            # "1" is a prefix of "10": its likelihood can never be below "10"'s, so such a set is decoded
            # under a grammar of its options instead, which lets the model go on from "1" to "10".
            options = "|".join(re.escape(choice) for choice in output.choices)
            output = OutputSpec(output.name, "regex", pattern=f"(?:{options})")
        return self._generate(prompts, params, output)

    def _choose(self, prompts: Sequence[str], choices: Sequence[str]) -> Indexed:
        for index, completion in self.option_logprobs(prompts, choices):
            if completion.status == "ok":
                scores = completion.output
                completion = Completion(
                    output=max(choices, key=lambda option: scores[option]),
                    latency_s=completion.latency_s,
                    extra={"option_logprobs": scores},
                )
            yield index, completion

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str], params: GenerationParams, output: OutputSpec | None) -> Indexed:
        rendered = [self.render(p) for p in prompts]
        stop = () if output is not None else params.stop
        for batch_index, batch in enumerate(length_sorted_batches(self._lengths(rendered), self.batch_size)):
            started = time.perf_counter()
            inputs = self._encode([rendered[i] for i in batch], side="left")
            sample = params.temperature > 0
            if params.seed is not None:
                torch.manual_seed(params.seed + batch_index)
            generated = self.model.generate(
                **inputs,
                max_new_tokens=params.max_new_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                # Stop the batch early once every row has produced a stop string.
                **({"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}),
                **(
                    {"logits_processor": [self.grammars.processor(output, self.vocab_size, params.max_new_tokens)]}
                    if output
                    else {}
                ),
            )
            elapsed = (time.perf_counter() - started) / len(batch)
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            for row, index in enumerate(batch):
                ids = new_tokens[row]
                finished = (ids == self.tokenizer.eos_token_id) | (ids == self.tokenizer.pad_token_id)
                count = int(finished.int().argmax()) if bool(finished.any()) else len(ids)
                text = self.tokenizer.decode(ids[:count], skip_special_tokens=True)
                yield (
                    index,
                    Completion(
                        output=truncate_at_stop(text, stop),
                        prompt_tokens=int(inputs["attention_mask"][row].sum()),
                        completion_tokens=count,
                        latency_s=elapsed,
                    ),
                )

    @torch.inference_mode()
    def _continuation_logprobs(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[tuple[float, int]]:
        """Sum of log P(continuation | context) and its token count, for aligned lists."""
        context_ids = self.tokenizer(list(contexts), add_special_tokens=not self.use_chat_template)["input_ids"]
        cont_ids = self.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        sequences = [c + k for c, k in zip(context_ids, cont_ids)]
        results: list[tuple[float, int]] = [(math.nan, 0)] * len(sequences)
        for batch in length_sorted_batches([len(s) for s in sequences], self.batch_size):
            ids, mask = right_padded([sequences[i] for i in batch], self.tokenizer.pad_token_id)
            scored = torch.zeros(len(batch), ids.shape[1] - 1, dtype=torch.bool)
            spans = [(len(context_ids[i]), len(sequences[i])) for i in batch]
            for row, (start, end) in enumerate(spans):
                if start > 0:
                    scored[row, start - 1 : end - 1] = True
            nll = self._token_nll(ids, mask, scored)
            for i, (start, end), part in zip(batch, spans, nll.split(scored.sum(dim=1).tolist())):
                if start > 0 and end > start:
                    results[i] = (-float(part.sum()), end - start)
        return results

    @torch.inference_mode()
    def _next_token_logprobs(
        self, contexts: Sequence[str], token_ids: Sequence[int]
    ) -> Iterator[tuple[list[int], list[list[float]]]]:
        """log P(token | context) for each context and each of `token_ids`, yielded per batch as (context
        indices, rows): one forward pass per batch that projects only each row's last position."""
        context_ids = self.tokenizer(list(contexts), add_special_tokens=not self.use_chat_template)["input_ids"]
        wanted = torch.tensor(list(token_ids), device=self.device)
        for batch in length_sorted_batches([len(c) for c in context_ids], self.batch_size):
            ids, mask = right_padded([context_ids[i] for i in batch], self.tokenizer.pad_token_id)
            last = (mask.sum(dim=1) - 1).clamp(min=0)[:, None].to(self.device)
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), logits_to_keep=last
            ).logits
            logprobs = torch.log_softmax(logits[:, 0].float(), dim=-1)[:, wanted]
            yield (
                batch,
                [
                    logprobs[row].tolist() if context_ids[i] else [math.nan] * len(token_ids)
                    for row, i in enumerate(batch)
                ],
            )

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> Indexed:
        """Scores yielded per batch, so progress and ledger flushes follow the work."""
        rendered = [self.render(p) for p in prompts]
        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        started = time.perf_counter()
        if not options:
            for i in range(len(prompts)):
                yield i, Completion(output={}, latency_s=0.0)
            return
        if all(len(ids) == 1 for ids in option_ids):
            # Single-token options (A/B/C/D, 回复1 is not): the same scores from one pass per prompt.
            for batch, rows in self._next_token_logprobs(rendered, [ids[0] for ids in option_ids]):
                elapsed, started = (time.perf_counter() - started) / len(batch), time.perf_counter()
                for i, scores in zip(batch, rows):
                    yield i, _option_completion(dict(zip(options, scores)), elapsed)
            return
        # Multi-token options: the prompt once, its cache shared by every option.
        for i, scores in self._shared_prompt_logprobs(rendered, option_ids):
            elapsed, started = time.perf_counter() - started, time.perf_counter()
            yield i, _option_completion(dict(zip(options, scores)), elapsed)

    @torch.inference_mode()
    def _shared_prompt_logprobs(
        self, contexts: Sequence[str], option_ids: Sequence[list[int]]
    ) -> Iterator[tuple[int, list[float]]]:
        """log P(option | context) for every option, per context: one forward pass over the context (its
        last position gives each option's first token), then one pass over all the options together that
        continues from the context's cache, repeated once per option — the long prompt is never re-encoded
        per option. Equal to scoring each (context + option) sequence whole (a test compares the two)."""
        context_ids = self.tokenizer(list(contexts), add_special_tokens=not self.use_chat_template)["input_ids"]
        options, option_mask = right_padded(option_ids, self.tokenizer.pad_token_id)
        options, option_mask = options.to(self.device), option_mask.to(self.device)
        count, width = options.shape
        for i, ids in enumerate(context_ids):
            if not ids or not all(option_ids):
                yield i, [math.nan] * count
                continue
            last, cache = self._last_logprobs(torch.tensor([ids], device=self.device))
            scores = last[options[:, 0]]
            if width > 1:
                cache.batch_repeat_interleave(count)
                mask = torch.cat([torch.ones(count, len(ids), dtype=torch.long, device=self.device), option_mask], 1)
                later = self._continued_nll(options, mask, cache)
                scores = scores - (later * option_mask[:, 1:]).sum(dim=1)
            yield i, scores.tolist()

    def _last_logprobs(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """log P(next token) after one sequence, and its cache: through the output head when it is a plain
        projection (only the last position projected), else the model's own last logits."""
        if self.head is None:
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            return torch.log_softmax(out.logits[0, -1].float(), dim=-1), out.cache
        out = self.model.get_decoder()(input_ids=ids, use_cache=True)
        return torch.log_softmax(self.head.logits(out.last_hidden_state[0, -1:])[0], dim=-1), out.cache

    def _continued_nll(self, options: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        """-log P(options[:, t] | cache, options[:, :t]) for t >= 1, as (options, width - 1)."""
        inputs = {"input_ids": options[:, :-1], "attention_mask": mask[:, :-1], "cache": cache, "use_cache": True}
        targets = options[:, 1:]
        if self.head is None:
            logits = self.model(**inputs).logits.float()
            return -torch.log_softmax(logits, dim=-1).gather(2, targets[:, :, None])[:, :, 0]
        states = self.model.get_decoder()(**inputs).last_hidden_state
        return self.head.token_nll(states.reshape(-1, states.shape[-1]), targets.reshape(-1)).view(targets.shape)

    @torch.inference_mode()
    def perplexity(self, texts: Sequence[str]) -> Indexed:
        encoded = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        for batch in length_sorted_batches([len(e) for e in encoded], self.batch_size):
            started = time.perf_counter()
            ids, mask = right_padded([encoded[i] for i in batch], self.tokenizer.pad_token_id)
            scored = mask[:, 1:].bool()
            counts = scored.sum(dim=1).tolist()
            nll = self._token_nll(ids, mask, scored)
            elapsed = (time.perf_counter() - started) / len(batch)
            for i, n, part in zip(batch, counts, nll.split(counts)):
                if n == 0:
                    yield i, Completion.failed("text has fewer than two tokens", elapsed)
                else:
                    yield i, Completion(output=math.exp(float(part.sum()) / n), prompt_tokens=n + 1, latency_s=elapsed)

    def close(self) -> None:
        ENGINES.release(self.engine_key)


def _option_completion(scores: dict[str, float], elapsed: float) -> Completion:
    if any(math.isnan(v) for v in scores.values()):
        return Completion.failed("option or prompt has no tokens", elapsed)
    return Completion(output=scores, latency_s=elapsed)
