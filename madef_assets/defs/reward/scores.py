"""Parsing the judge's score lists, and the per-row order of the two responses."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from madef_assets.llm.resource import LLMResult, ParseError
from madef_assets.llm.structured import OutputSpec, object_spec
from madef_assets.prompts import template

# How a row's response score was obtained, by its number of candidates: the two kinds are selected apart.
SCORED_AS = {2: "pair", 1: "single"}
_NUMBER = r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*"


def parse_score_list(text: str, count: int) -> list[float]:
    """Exactly `count` numbers in [0, 1] as a list, e.g. "[0.9, 0.2]". The templates end with "[" and
    the judge may stop at "]", so both brackets are optional; anything else raises ParseError."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    match = re.fullmatch(r"\[?" + ",".join([_NUMBER] * count) + r"\]?\.?", line)
    if not match:
        raise ParseError(f"expected a list of {count} score(s), got {line[:60]!r}")
    scores = [float(group) for group in match.groups()]
    if not all(0.0 <= score <= 1.0 for score in scores):
        raise ParseError(f"score out of [0, 1]: {scores}")
    return scores


def parse_two_scores(text: str) -> list[float]:
    return parse_score_list(text, 2)


def parse_one_score(text: str) -> float:
    return parse_score_list(text, 1)[0]


def scores_output(count: int, read: Callable[[list[float]], Any] = lambda scores: scores) -> OutputSpec:
    """`count` scores in [0, 1] as `{"scores": [...]}`; `read` gets the list the free-text parser reads."""
    score = {"type": "number", "minimum": 0, "maximum": 1}
    items = {"type": "array", "items": score, "minItems": count, "maxItems": count}
    return object_spec(f"scores_{count}", {"scores": items}, lambda value: read([float(s) for s in value["scores"]]))


TWO_SCORES_OUTPUT = scores_output(2)
ONE_SCORE_OUTPUT = scores_output(1, read=lambda scores: scores[0])


@dataclass(frozen=True)
class ResponseSafetyTemplates:
    """The template families the judge scores responses with: a pair, and a lone candidate."""

    pair: str
    single: str


# method.response_safety_prompt -> its templates. `paper`: the paper's prompt (§3.7: a safety assessment expert,
# higher scores for higher safety, only the numbers in list form); `helpful`: madef's earlier variant.
RESPONSE_SAFETY_TEMPLATES = {
    "paper": ResponseSafetyTemplates("response_pair_safety", "response_single_safety"),
    "helpful": ResponseSafetyTemplates("helpful_pair_safety", "helpful_single_safety"),
}
PAPER = RESPONSE_SAFETY_TEMPLATES["paper"]


def pair_prompt(prompt: str, lang: str, first: str, second: str, family: str = PAPER.pair) -> str:
    """The pairwise safety prompt: `first` shown as Response 1, `second` as 2."""
    return template(family, lang).render(prompt=prompt, response_1=first, response_2=second)


def swap_order(prompt_id: str, seed: int) -> bool:
    """Whether this row shows the original response first: a seeded coin flip per prompt, so position
    bias averages out and the order is reproducible."""
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[0] % 2 == 1


@dataclass
class ResponseJudging:
    """The judge requests for a table of instructions with their candidate responses."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[int, str]] = field(default_factory=list)
    singles: list[tuple[int, str, str]] = field(default_factory=list)

    def apply_pairs(self, results: list[LLMResult]) -> None:
        for (row, _), result in zip(self.pairs, results):
            entry = self.rows[row]
            entry.update(status=result.status, error=result.error, raw_output=result.output)
            if result.status == "ok":
                first, second = result.value
                original, safe = (first, second) if entry["original_first"] else (second, first)
                entry.update(original_response_score=original, safe_response_score=safe)

    def apply_singles(self, results: list[LLMResult]) -> None:
        for (row, name, _), result in zip(self.singles, results):
            self.rows[row].update(status=result.status, error=result.error, raw_output=result.output)
            if result.status == "ok":
                self.rows[row][f"{name}_response_score"] = result.value


def plan_response_judging(
    instructions: list[dict[str, Any]], seed: int, templates: ResponseSafetyTemplates = PAPER
) -> ResponseJudging:
    """Two candidates: one pairwise prompt in a seeded random order (`scored_as` pair); one: a single-response
    prompt on the same criteria and scale (`scored_as` single, kept apart in selection, §3.4); none: no call,
    status `no_candidate`."""
    plan = ResponseJudging()
    for row in instructions:
        candidates = [(name, row[f"{name}_response"]) for name in ("safe", "original") if row[f"{name}_response"]]
        entry = {
            "prompt_id": row["prompt_id"],
            "candidates": len(candidates),
            "scored_as": SCORED_AS.get(len(candidates)),
            "original_first": None,
            "safe_response_score": None,
            "original_response_score": None,
            "status": "no_candidate",
            "error": None,
            "raw_output": None,
        }
        if len(candidates) == 2:
            entry["original_first"] = swap_order(row["prompt_id"], seed)
            first, second = (
                (row["original_response"], row["safe_response"])
                if entry["original_first"]
                else (row["safe_response"], row["original_response"])
            )
            rendered = pair_prompt(row["prompt"], row["lang"], first, second, templates.pair)
            plan.pairs.append((len(plan.rows), rendered))
        elif candidates:
            name, text = candidates[0]
            rendered = template(templates.single, row["lang"]).render(prompt=row["prompt"], response_1=text)
            plan.singles.append((len(plan.rows), name, rendered))
        plan.rows.append(entry)
    return plan
