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
# Generic heads a Chinese label may end with after its term (色情内容, 暴力行为, 危险性, 侮辱性语言, 制作炸弹方法,
# 诈骗团伙, 越狱攻击): stripped before matching, one after the other, as long as 2+ characters remain. Each names
# a how-to, a medium, a group or an act of whatever precedes it, never a safety category of its own.
GENERIC_SUFFIXES = (
    *("问题", "行为", "内容", "言论", "语言", "信息", "话题", "相关", "风险", "活动", "倾向", "类", "性"),
    *("方法", "教程", "技巧", "手段", "手法", "方式", "途径", "步骤", "指南", "攻略", "建议", "咨询", "知识", "技术"),
    *("工具", "意图", "现象", "事件", "案例", "平台", "网站", "软件", "程序", "用语", "词汇", "言辞", "评论", "交易"),
    *("制作", "制造", "传播", "分子", "团伙", "集团", "组织", "产业", "宣传", "思想", "生成", "评价", "攻击", "推荐"),
    "招募",
)
# A prefix term's object after it (伪造 + 学历, 盗刷 + 信用卡): 2-3 characters, the length of a Chinese noun; a
# 3-character one not ending with a one-character head that makes the whole a new noun (极端主义学 is a
# discipline, 伦理道德观 an outlook, 激进化学 chemistry); a 2-character one not ending with FIELD_HEADS.
PREFIX_OBJECT_CHARS = (2, 3)
NOUN_HEADS = ("学", "家", "者", "史", "论", "观", "片", "剧", "经", "课", "界")
# After a 2-character object only the heads of a field of study or thought make a new noun (抑郁症学, 作弊器学); a
# person, a picture or a country stays the object (歧视患者, 色情图片, 诋毁国家).
FIELD_HEADS = ("学", "史", "论", "观", "经", "课", "界")
# Words that open a Chinese label without naming its theme (涉及伪造公章的问题, 生成骂人的话, 关于毒品交易): taken
# off the start of a unit, one after the other, as long as 2+ characters remain, so the theme that follows is
# matched as if it opened the label.
LEADING_CONTEXT = (
    *("涉及", "关于", "有关", "针对", "对于", "询问", "请求", "要求", "寻求", "获取", "提供", "生成", "编写"),
    *("撰写", "如何", "怎么", "怎样", "帮助", "协助", "教人", "试图", "企图", "利用", "通过"),
)
_CJK_TERM = re.compile(r"[\u3400-\u9fff]{2,}")
_EN_TERM = re.compile(r"[a-z]{3,}( [a-z]{2,})*")
_TOKENS = re.compile(r"[\u3400-\u9fff]+|[a-z0-9]+")


@dataclass(frozen=True)
class Rule:
    """Terms of one category that match whole units of a label, never a substring of an unrelated word: an
    English term matches a run of whole words (a final regular plural allowed: crime, crimes; loss, losses); a
    Chinese term (2+ characters) matches a run of Chinese characters that is the term or ends with it (Chinese
    compounds put the head last: 电信诈骗 is a kind of 诈骗), optionally followed by GENERIC_SUFFIXES.

    Prefix terms (Chinese only) match like terms and also at the START of a run (before generic suffixes),
    followed by an object of 2-3 characters (PREFIX_OBJECT_CHARS): verbs before their object (伪造学历,
    盗刷信用卡, 歧视女性) and modifiers whose every compound stays in the category (非法集资, 色情小说,
    隐私侵犯). Only words listed as prefix terms do this: a noun at the start of a compound is usually a
    modifier of some other head (恐怖片 is a film, 道德经 a book), so a plain term never matches there. The
    object bounds the unit: one character (伪造者), 4+ (a phrase with a head of its own) or an object ending
    with a one-character noun head (NOUN_HEADS: 极端主义学, 伦理道德观) does not match at the start."""

    category: str
    terms: tuple[str, ...]
    prefix_terms: tuple[str, ...] = ()

    def match_length(self, label: str) -> int:
        """The length of this rule's longest term that matches the label, 0 when none does."""
        tokens = _TOKENS.findall(label.lower())
        words = [t for t in tokens if t.isascii()]
        heads = {unit for run in tokens if not run.isascii() for core in _cores(run) for unit in _units(core)}
        matched = [
            term
            for term in self.terms + self.prefix_terms
            if (_words_match(term.split(" "), words) if term.isascii() else any(head.endswith(term) for head in heads))
        ]
        matched += [term for term in self.prefix_terms if any(_starts_with_verb(head, term) for head in heads)]
        return max(map(len, matched), default=0)


def _starts_with_verb(head: str, term: str) -> bool:
    """The head is the prefix term followed by an object (伪造学历), not by a noun of its own (伪造者, 极端主义学)."""
    rest = len(head) - len(term)
    return (
        head.startswith(term)
        and rest in PREFIX_OBJECT_CHARS
        and not head.endswith(NOUN_HEADS if rest == 3 else FIELD_HEADS)
    )


def _units(core: str) -> list[str]:
    """A core with and without each leading context word it opens with (涉及伪造公章 -> 涉及伪造公章, 伪造公章)."""
    units = [core]
    while prefix := next(
        (p for p in LEADING_CONTEXT if units[-1].startswith(p) and len(units[-1]) - len(p) >= 2), None
    ):
        units.append(units[-1][len(prefix) :])
    return units


def _cores(run: str) -> list[str]:
    """A run of Chinese characters, then the run without each generic suffix it ends with (侮辱性语言, 侮辱性, 侮辱),
    with the particle that joined it (涉及粗俗辱骂的问题, 涉及粗俗辱骂). A head that is not generic keeps its
    particle and its place (研究诈骗的历史 is about history)."""
    cores = [run]
    while suffix := next(
        (
            s
            for s in GENERIC_SUFFIXES
            if cores[-1].endswith(s) and len(cores[-1].removesuffix(s).removesuffix("的")) >= 2
        ),
        None,
    ):
        cores.append(cores[-1][: -len(suffix)].removesuffix("的"))
    return cores


def _words_match(term: list[str], words: list[str]) -> bool:
    n = len(term)
    return any(
        words[i : i + n - 1] == term[:-1] and words[i + n - 1] in _singular_and_plural(term[-1])
        for i in range(len(words) - n + 1)
    )


def _singular_and_plural(word: str) -> tuple[str, str]:
    """The word and its regular plural: crime, crimes; loss, losses; tax, taxes."""
    return word, word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


def check_rule_terms(rules: tuple[Rule, ...]) -> list[str]:
    """Problems that would let a rule fire inside an unrelated word or make two rules compete for one term:
    single Chinese characters, short or non-word English terms, generic suffixes as terms, duplicates."""
    problems, seen = [], {}
    for rule in rules:
        problems += [
            f"rule {rule.category}: prefix term {term!r} is not 2+ Chinese characters"
            for term in rule.prefix_terms
            if not _CJK_TERM.fullmatch(term)
        ]
        for term in rule.terms + rule.prefix_terms:
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
        if any(not {"category", "terms"} <= set(r) <= {"category", "terms", "prefix_terms"} for r in rules):
            raise ValueError(
                f"{path}: every rule must have exactly `category` and `terms`, optionally `prefix_terms` (whole "
                "terms, no patterns)"
            )
        taxonomy = cls(
            categories=raw["categories"],
            labels={normalize_label(k): v for k, v in (raw.get("labels") or {}).items()},
            rules=tuple(Rule(r["category"], tuple(r["terms"]), tuple(r.get("prefix_terms") or ())) for r in rules),
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
