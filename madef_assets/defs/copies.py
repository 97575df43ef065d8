"""Copies are never data: a generated text that reproduces its template's example, or the text it was
asked to answer or vary, is detected by the long n-grams it shares with them (the contamination rule's
13 Chinese characters / 8 English words)."""

from __future__ import annotations

from collections.abc import Iterable

from madef_assets.defs.text import ngrams

# How the error of a row rejected as a copy begins (generation.py, responses/cot.py).
COPY_ERROR_PREFIXES = ("copies ", "the answer repeats")


def is_copy_error(error: str | None) -> bool:
    return bool(error) and error.startswith(COPY_ERROR_PREFIXES)


def shared_ngram(text: str, references: Iterable[str], zh_chars: int, en_words: int) -> str | None:
    """A long n-gram the text shares with any reference (or the whole text equal to one), else None."""
    grams = ngrams(text, zh_chars, en_words)
    for reference in references:
        shared = grams & ngrams(reference, zh_chars, en_words)
        if shared:
            return min(shared)[2:]
    return None


def copied_share(text: str, reference: str, zh_chars: int, en_words: int) -> float:
    """The share of the text's long n-grams that also occur in the reference (1.0 for a verbatim copy)."""
    grams = {g for g in ngrams(text, zh_chars, en_words) if not g.startswith("x:")} or ngrams(text, zh_chars, en_words)
    if not grams:
        return 0.0
    return len(grams & ngrams(reference, zh_chars, en_words)) / len(grams)
