"""The reviewed taxonomy file and the mapping of raw labels and source categories to the 14 categories of the
paper's Table 4-1 (§3.2: the labeler's raw labels are merged into them by rules, review and hand)."""

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
# Generic heads a Chinese label may end with after its term (色情内容, 暴力行为, 危险性, 侮辱性语言): stripped
# before matching, one after the other, as long as 2+ characters remain.
GENERIC_SUFFIXES = ("问题", "行为", "内容", "言论", "语言", "信息", "话题", "相关", "风险", "活动", "倾向", "类", "性")
_CJK_TERM = re.compile(r"[\u3400-\u9fff]{2,}")
_EN_TERM = re.compile(r"[a-z]{3,}( [a-z]{2,})*")
_TOKENS = re.compile(r"[\u3400-\u9fff]+|[a-z0-9]+")


@dataclass(frozen=True)
class Rule:
    """Terms of one category that match whole units of a label, never a substring of an unrelated word: an
    English term matches a run of whole words (a final plural `s` allowed: crime, crimes); a Chinese term
    (2+ characters) matches a run of Chinese characters that is the term or ends with it (Chinese compounds put
    the head last: 电信诈骗 is a kind of 诈骗), optionally followed by GENERIC_SUFFIXES."""

    category: str
    terms: tuple[str, ...]

    def match_length(self, label: str) -> int:
        """The length of this rule's longest term that matches the label, 0 when none does."""
        tokens = _TOKENS.findall(label.lower())
        words = [t for t in tokens if t.isascii()]
        heads = {core for run in tokens if not run.isascii() for core in _cores(run)}
        matched = [
            term
            for term in self.terms
            if (_words_match(term.split(" "), words) if term.isascii() else any(head.endswith(term) for head in heads))
        ]
        return max(map(len, matched), default=0)


def _cores(run: str) -> list[str]:
    """A run of Chinese characters, then the run without each generic suffix it ends with (侮辱性语言, 侮辱性, 侮辱)."""
    cores = [run]
    while suffix := next((s for s in GENERIC_SUFFIXES if cores[-1].endswith(s) and len(cores[-1]) - len(s) >= 2), None):
        cores.append(cores[-1][: -len(suffix)])
    return cores


def _words_match(term: list[str], words: list[str]) -> bool:
    n = len(term)
    return any(
        words[i : i + n - 1] == term[:-1] and words[i + n - 1] in (term[-1], term[-1] + "s")
        for i in range(len(words) - n + 1)
    )


def check_rule_terms(rules: tuple[Rule, ...]) -> list[str]:
    """Problems that would let a rule fire inside an unrelated word or make two rules compete for one term:
    single Chinese characters, short or non-word English terms, generic suffixes as terms, duplicates."""
    problems, seen = [], {}
    for rule in rules:
        for term in rule.terms:
            if not (_CJK_TERM.fullmatch(term) or _EN_TERM.fullmatch(term)):
                problems.append(
                    f"rule {rule.category}: {term!r} is neither 2+ Chinese characters nor lower-case whole "
                    "words of 3+ letters"
                )
            elif term in GENERIC_SUFFIXES:
                problems.append(f"rule {rule.category}: {term!r} is a generic suffix, not a safety term")
            if term in seen:
                problems.append(f"rule {rule.category}: {term!r} is already a term of rule {seen[term]}")
            seen[term] = rule.category
    return problems


@dataclass(frozen=True)
class Taxonomy:
    categories: dict[str, dict[str, Any]]
    labels: dict[str, str]
    rules: tuple[Rule, ...]
    source_categories: dict[str, dict[str, str | None]]
    fewshot_scenarios: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        rules = raw.get("rules") or ()
        if any(set(r) != {"category", "terms"} for r in rules):
            raise ValueError(f"{path}: every rule must have exactly `category` and `terms` (whole terms, no patterns)")
        taxonomy = cls(
            categories=raw["categories"],
            labels={normalize_label(k): v for k, v in (raw.get("labels") or {}).items()},
            rules=tuple(Rule(r["category"], tuple(r["terms"])) for r in rules),
            source_categories=raw.get("source_categories") or {},
            fewshot_scenarios=raw.get("fewshot_scenarios") or {},
        )
        taxonomy.validate(path)
        return taxonomy

    def validate(self, path: Path) -> None:
        if tuple(self.categories) != CATEGORIES:
            raise ValueError(f"{path}: categories must be exactly {CATEGORIES}")
        used = list(self.labels.values()) + [r.category for r in self.rules]
        used += [c for mapping in self.source_categories.values() for c in mapping.values() if c is not None]
        unknown = sorted(set(used) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"{path}: unknown categories {unknown}")
        problems = check_rule_terms(self.rules)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))

    def map_label(self, label: str) -> tuple[str | None, str]:
        """(category, how): 'accepted' from the reviewed list, 'rule' from the rule whose matching term is
        longest (the most specific: 网络暴力 before 暴力; ties: the rule listed first), else unmapped."""
        key = normalize_label(label)
        if key in self.labels:
            return self.labels[key], "accepted"
        best = max(((rule.match_length(label), -i) for i, rule in enumerate(self.rules)), default=(0, 0))
        return (self.rules[-best[1]].category, "rule") if best[0] else (None, "unmapped")

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
