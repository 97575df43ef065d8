"""Contamination: long n-grams shared between training prompts and evaluation prompts."""

from __future__ import annotations

import re
from collections.abc import Iterable

from madef_assets.defs.diversity.dedup import normalize_text

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, zh_chars: int, en_words: int) -> set[str]:
    """Character n-grams of the CJK-bearing normalized text, word n-grams of its Latin words, and the
    whole normalized text (so a prompt too short for an n-gram is still caught when copied verbatim)."""
    normalized = normalize_text(text)
    grams: set[str] = {"x:" + normalized} if normalized else set()
    if _CJK.search(normalized) and len(normalized) >= zh_chars:
        grams |= {"c:" + normalized[i : i + zh_chars] for i in range(len(normalized) - zh_chars + 1)}
    words = _WORD.findall(text.lower())
    if len(words) >= en_words:
        grams |= {"w:" + " ".join(words[i : i + en_words]) for i in range(len(words) - en_words + 1)}
    return grams


def contaminated(train: Iterable[tuple[str, str]], evaluation: Iterable[str], zh_chars: int, en_words: int) -> list[tuple[str, str]]:
    """(train id, shared n-gram) for every training prompt sharing an n-gram with an evaluation prompt."""
    reference: set[str] = set()
    for text in evaluation:
        reference |= ngrams(text, zh_chars, en_words)
    leaks = []
    for key, text in train:
        shared = ngrams(text, zh_chars, en_words) & reference
        if shared:
            leaks.append((key, min(shared)[2:]))
    return leaks
