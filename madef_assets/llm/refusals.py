"""Recognizing a refusal at the start of a model's text, in Chinese and English. A refusal is data about
the model that wrote it: an attacker that refuses has written no attack prompt."""

from __future__ import annotations

import json
import re

_REFUSAL_OPENING = re.compile(
    r"^[\W_]*(?:"
    r"(?:非常|十分|很)?(?:抱歉|对不起)|很遗憾|恕我(?:无法|不能)"
    r"|我(?:无法|不能|不会|没法)(?:为你|为您|帮你|帮您)?(?:提供|帮助|协助|完成|回答|满足|生成|编写|创作|参与|执行|支持)"
    r"|作为(?:一个|一名)?(?:AI|人工智能|语言模型|AI助手)"
    r"|I(?:'m| am) (?:sorry|afraid|unable|not able)|Sorry\b|Unfortunately\b"
    r"|I (?:can(?:no|')t|cannot|won't|will not|must decline|am unable to|'m unable to|am not able to)"
    r"\s+(?:help|assist|provide|comply|create|generate|write|do|fulfil|fulfill|support|answer|give|share|engage)"
    r"|As an AI\b"
    r")",
    re.IGNORECASE,
)


def answer_refusal(text: str | None) -> str | None:
    """The refusing words an answer opens with, looking inside a JSON answer too (a structured answer's
    refusal sits in its first text field: `{"prompt": "抱歉，我无法…"}`, `{"labels": ["I can't help"]}`)."""
    opening = refusal_opening(text)
    if opening or not (text or "").lstrip().startswith("{"):
        return opening
    try:
        value = json.loads(text)
    except ValueError:
        return None
    fields = value.values() if isinstance(value, dict) else ()
    texts = [v for field in fields for v in (field if isinstance(field, list) else [field]) if isinstance(v, str)]
    return next(filter(None, map(refusal_opening, texts[:1])), None)


def refusal_opening(text: str | None) -> str | None:
    """The refusing words the text opens with ("抱歉", "I can't help", ...), or None when it does not."""
    match = _REFUSAL_OPENING.match(text or "")
    return match.group(0).strip(" \t\n\r*\"'“”：:，,") if match else None
