"""Grammar-constrained decoding for local transformers models through xgrammar (its public API only).

xgrammar was chosen by measurement over llguidance on the bundled Gemma 3 tokenizer (262k tokens): both kept
every answer valid, xgrammar ~1.6x faster per request and ~5x faster to set up on CPU (bench/structured.py,
BENCHMARKS.md)."""

from __future__ import annotations

import json
import threading
from typing import Any

from transformers import LogitsProcessor, PreTrainedTokenizerBase

from madef_assets.llm.structured import OutputSpec

USEFUL_STRING_CHARS = 8  # fewer items rather than strings shorter than this (or their own maxLength)


def fit_to_budget(schema: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """The schema tightened so that a complete answer fits `max_new_tokens` (counting a character as at most
    one token, which holds but for byte-fallback tokens): a grammar lets the model write a string until its
    maxLength, and an answer cut at the budget is not JSON. Arrays keep fewer items (down to minItems) while
    their strings would get fewer than USEFUL_STRING_CHARS, then every string's maxLength shares what the
    JSON around them leaves, in proportion to its own. Nothing changes when the answer already fits; the
    answer is still checked against the schema the step asked for, which the fitted one only narrows."""
    fitted = json.loads(json.dumps(schema))
    while True:
        strings, arrays = _strings_and_arrays(fitted, 1)
        room = max_new_tokens - len(json.dumps(_skeleton(fitted)))
        wanted = sum(cap * count for cap, count, _ in strings)
        if wanted <= room:
            for cap, _, node in strings:  # a string without its own maxLength gets the one counted for it
                node.setdefault("maxLength", cap)
            return fitted
        shares = [room * cap / wanted for cap, _, _ in strings]
        short = any(share < min(cap, USEFUL_STRING_CHARS) for share, (cap, _, _) in zip(shares, strings))
        shrinkable = [a for a in arrays if a.get("maxItems", 1) > max(a.get("minItems", 1), 1)]
        if short and shrinkable:
            widest = max(shrinkable, key=lambda a: a["maxItems"])
            widest["maxItems"] -= 1
            continue
        for share, (_, _, node) in zip(shares, strings):
            node["maxLength"] = max(int(share), node.get("minLength", 0), 1)
        return fitted


def _strings_and_arrays(node: dict[str, Any], count: int) -> tuple[list[tuple[int, int, dict]], list[dict]]:
    """(maxLength, how many may appear, node) of each free string, and the arrays with a maxItems."""
    if node.get("type") == "string" and "enum" not in node and "pattern" not in node:
        return [(node.get("maxLength", USEFUL_STRING_CHARS * 8), count, node)], []
    strings, arrays = [], []
    if node.get("type") == "array":
        if "maxItems" in node:
            arrays.append(node)
        found = _strings_and_arrays(node.get("items", {}), count * node.get("maxItems", 1))
        return found[0], arrays + found[1]
    for child in node.get("properties", {}).values():
        found = _strings_and_arrays(child, count)
        strings, arrays = strings + found[0], arrays + found[1]
    return strings, arrays


def _skeleton(node: dict[str, Any]) -> Any:
    """The longest answer's JSON without its free strings' contents (numbers as 5 characters)."""
    if "enum" in node:
        return max(node["enum"], key=lambda value: len(json.dumps(value)))
    kind = node.get("type")
    if kind == "object":
        return {name: _skeleton(child) for name, child in node.get("properties", {}).items()}
    if kind == "array":
        return [_skeleton(node.get("items", {}))] * node.get("maxItems", 1)
    return "" if kind == "string" else 0.125


class Grammars:
    """One tokenizer's grammar compiler, and each output spec's compiled grammar once compiled."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._compiler: Any = None
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _compile(self, output: OutputSpec, vocab_size: int, max_new_tokens: int) -> Any:
        import xgrammar

        with self._lock:
            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab_size)
                self._compiler = xgrammar.GrammarCompiler(info)
            key = json.dumps([output.key(), max_new_tokens], sort_keys=True)
            if key not in self._compiled:
                if output.kind == "regex":
                    self._compiled[key] = self._compiler.compile_regex(output.pattern)
                else:
                    # Compact JSON: no free whitespace for a small model to wander into.
                    schema = json.dumps(fit_to_budget(output.as_json_schema(), max_new_tokens))
                    self._compiled[key] = self._compiler.compile_json_schema(schema, any_whitespace=False)
            return self._compiled[key]

    def processor(self, output: OutputSpec, vocab_size: int, max_new_tokens: int) -> LogitsProcessor:
        """A logits processor for one `generate` call (xgrammar's are single-use) that masks every token the
        spec's grammar, fitted to the token budget, does not allow next; the grammar lets the model end only
        where the shape is complete."""
        import xgrammar.contrib.hf

        return xgrammar.contrib.hf.LogitsProcessor(self._compile(output, vocab_size, max_new_tokens))
