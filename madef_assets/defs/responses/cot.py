"""Parsing the responder's chain-of-thought answer into reasoning and final answer."""

from __future__ import annotations

import re

from madef_assets.defs.copies import copied_share, shared_ngram
from madef_assets.llm.resource import ParseError
from madef_assets.llm.structured import object_spec

ANSWER_MARKER = re.compile(r"(?:^|\n)\s*(?:回答|最终回答|Answer|Final answer)\s*[:：]", re.IGNORECASE)
NEXT_EXAMPLE = re.compile(r"\n\s*\n?\s*(?:请求|Request)\s*[:：]")
STOP_SEQUENCES = ("\n\n请求：", "\n\nRequest:")


def parse_cot(text: str) -> tuple[str, str]:
    """(reasoning, answer): the text before the answer marker and the answer after it, up to where
    the model starts a new example. No marker or an empty part raises ParseError."""
    text = NEXT_EXAMPLE.split(text, maxsplit=1)[0]
    match = ANSWER_MARKER.search(text)
    if not match:
        raise ParseError("no answer marker ('回答：' / 'Answer:') in the response")
    return checked_cot(text[: match.start()], text[match.end() :])


def checked_cot(reasoning: str, answer: str) -> tuple[str, str]:
    """(reasoning, answer) trimmed, or ParseError when either is empty."""
    reasoning, answer = reasoning.strip(), answer.strip()
    if not reasoning:
        raise ParseError("empty safety analysis before the answer")
    if not answer:
        raise ParseError("empty answer after the marker")
    return reasoning, answer


# Bounded so a constrained answer closes its strings within the responder's token budget.
COT_OUTPUT = object_spec(
    "safe_response_cot",
    {
        "reasoning": {"type": "string", "minLength": 1, "maxLength": 400},
        "answer": {"type": "string", "minLength": 1, "maxLength": 800},
    },
    read=lambda value: checked_cot(value["reasoning"], value["answer"]),
)

MAX_SHARE_OF_PROMPT = 0.5


def copy_problem(
    reasoning: str, answer: str, prompt: str, template_words: str, zh_chars: int, en_words: int
) -> str | None:
    """Why a parsed answer is a copy rather than an answer, or None: it reproduces the template's worked
    example (a one-shot answer about another request), or mostly repeats the prompt it answers."""
    copied = shared_ngram(reasoning + "\n" + answer, [template_words], zh_chars, en_words)
    if copied:
        return f"copies the template's example: {copied!r}"
    share = copied_share(answer, prompt, zh_chars, en_words)
    if share >= MAX_SHARE_OF_PROMPT:
        return f"the answer repeats the prompt ({share:.0%} of its long n-grams)"
    return None
