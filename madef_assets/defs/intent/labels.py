"""Parsing the labeler's answer into intent labels."""

from __future__ import annotations

import re

from madef_assets.llm.resource import ParseError
from madef_assets.llm.structured import object_spec

MAX_LABELS = 6
MAX_LABEL_CHARS = 24
_SEPARATORS = re.compile(r"[,，、;；/|]+")
_DECORATION = re.compile(r"^[\s\-*•·\d.)）(（\[\]【】\"'“”‘’：:]+|[\s\"'“”‘’。.!！\]】]+$")
_NOT_KEY = re.compile(r"[\W_]+", re.UNICODE)


def parse_labels(text: str) -> list[str]:
    """Labels from the first non-empty line of the answer: split on commas and similar, trimmed,
    de-duplicated. Prose, an empty answer or too many labels raise ParseError."""
    line = next((candidate.strip() for candidate in text.splitlines() if candidate.strip()), "")
    return checked_labels(_SEPARATORS.split(line))


def checked_labels(parts: list[str]) -> list[str]:
    """The labels among `parts`, trimmed of decoration and de-duplicated, or ParseError when they are not
    labels (none, too many, too long, no letters) — the same rules for a free-text and a JSON answer."""
    labels: list[str] = []
    for part in parts:
        label = _DECORATION.sub("", part.strip())
        if label and normalize_label(label) not in {normalize_label(x) for x in labels}:
            labels.append(label)
    if not labels:
        raise ParseError("no label in the answer")
    if len(labels) > MAX_LABELS:
        raise ParseError(f"{len(labels)} labels, more than {MAX_LABELS}")
    long = [label for label in labels if len(label) > MAX_LABEL_CHARS]
    if long:
        raise ParseError(f"not a label (over {MAX_LABEL_CHARS} characters): {long[0][:40]!r}")
    if not all(normalize_label(label) for label in labels):
        raise ParseError("a label has no letters")
    return labels


def normalize_label(label: str) -> str:
    """The mapping key of a label: lower case, without spaces and punctuation."""
    return _NOT_KEY.sub("", label.lower())


LABELS_OUTPUT = object_spec(
    "intent_labels",
    {
        "labels": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS},
            "minItems": 1,
            "maxItems": MAX_LABELS,
        }
    },
    read=lambda value: checked_labels(value["labels"]),
)
