"""Parsing the labeler's answer into intent labels."""

from __future__ import annotations

import re

from madef_assets.llm.resource import ParseError

MAX_LABELS = 6
MAX_LABEL_CHARS = 24
_SEPARATORS = re.compile(r"[,，、;；/|]+")
_DECORATION = re.compile(r"^[\s\-*•·\d.)）(（\[\]【】\"'“”‘’：:]+|[\s\"'“”‘’。.!！\]】]+$")
_NOT_KEY = re.compile(r"[\W_]+", re.UNICODE)


def parse_labels(text: str) -> list[str]:
    """Labels from the first non-empty line of the answer: split on commas and similar, trimmed,
    de-duplicated. Prose, an empty answer or too many labels raise ParseError."""
    line = next((candidate.strip() for candidate in text.splitlines() if candidate.strip()), "")
    labels: list[str] = []
    for part in _SEPARATORS.split(line):
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
