"""Parsing the judge's score lists, and the per-row order of the two responses."""

from __future__ import annotations

import hashlib
import re

from madef_assets.llm.resource import ParseError

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


def swap_order(prompt_id: str, seed: int) -> bool:
    """Whether this row shows the original response first: a seeded coin flip per prompt, so position
    bias averages out and the order is reproducible."""
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[0] % 2 == 1
