"""The reviewed taxonomy file and the mapping of raw labels and source categories to 14 categories."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from madef_assets.defs.intent.labels import normalize_label

CATEGORIES = ("OFF", "UB", "CIA", "PP", "EM", "PMH", "IA", "MI", "DP", "NS", "EX", "PR", "DT", "PS")
PROPOSAL_MIN_SIMILARITY = 0.3


@dataclass(frozen=True)
class Taxonomy:
    categories: dict[str, dict[str, Any]]
    labels: dict[str, str]
    rules: tuple[tuple[re.Pattern, str], ...]
    source_categories: dict[str, dict[str, str | None]]
    fewshot_scenarios: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        taxonomy = cls(
            categories=raw["categories"],
            labels={normalize_label(k): v for k, v in (raw.get("labels") or {}).items()},
            rules=tuple((re.compile(r["pattern"], re.IGNORECASE), r["category"]) for r in raw.get("rules") or ()),
            source_categories=raw.get("source_categories") or {},
            fewshot_scenarios=raw.get("fewshot_scenarios") or {},
        )
        taxonomy.validate(path)
        return taxonomy

    def validate(self, path: Path) -> None:
        if tuple(self.categories) != CATEGORIES:
            raise ValueError(f"{path}: categories must be exactly {CATEGORIES}")
        used = list(self.labels.values()) + [c for _, c in self.rules]
        used += [c for mapping in self.source_categories.values() for c in mapping.values() if c is not None]
        unknown = sorted(set(used) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"{path}: unknown categories {unknown}")

    def map_label(self, label: str) -> tuple[str | None, str]:
        """(category, how): 'accepted' from the reviewed list, 'rule' from a pattern, else unmapped."""
        key = normalize_label(label)
        if key in self.labels:
            return self.labels[key], "accepted"
        for pattern, category in self.rules:
            if pattern.search(key):
                return category, "rule"
        return None, "unmapped"

    def label_category(self, labels: list[str]) -> str | None:
        """The category most of the labels map to (ties: the one named first), as prompt_categories.sql
        decides for labeled prompts; None when no label maps."""
        counts: dict[str, int] = {}
        for label in labels:
            category, how = self.map_label(label)
            if category is not None:
                counts[category] = counts.get(category, 0) + 1
        return max(counts, key=counts.get) if counts else None

    def map_source_category(self, source: str, category: str | None) -> str | None:
        return self.source_categories.get(source, {}).get(category) if category is not None else None

    @cached_property
    def _accepted_vectors(self) -> list[tuple[str, str, Counter]]:
        return [(label, category, char_bigrams(label)) for label, category in self.labels.items()]

    def propose(self, label: str) -> tuple[str | None, float]:
        """The category of the most similar reviewed label (character-bigram cosine), if similar enough."""
        vector = char_bigrams(normalize_label(label))
        best = max(((cosine(vector, v), category) for _, category, v in self._accepted_vectors), default=(0.0, None))
        return (best[1], round(best[0], 3)) if best[0] >= PROPOSAL_MIN_SIMILARITY else (None, round(best[0], 3))


def char_bigrams(text: str) -> Counter:
    padded = f"^{text}$"
    return Counter(padded[i : i + 2] for i in range(len(padded) - 1))


def cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b[k] for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0
