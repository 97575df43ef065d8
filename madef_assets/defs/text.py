"""Text as the stages compare it: the normalized form of exact duplicates and the long n-grams of copies and
contamination."""

from __future__ import annotations

import re
import unicodedata

_NOT_TEXT = re.compile(r"[\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z0-9]+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, no whitespace or punctuation: two prompts equal here are exact duplicates."""
    return _NOT_TEXT.sub("", unicodedata.normalize("NFKC", text).lower())


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
