"""The labeler's constrained choice for raw intent labels the taxonomy file does not map: one of the 14 categories
(or NONE), with a confidence where the backend scores the options, before a person sees the label.

Confidence: a local backend (transformers, vllm) scores each option's text (the 14 codes and NONE) as the
opening of the answer to the rendered prompt (`LLMResource.option_logprobs`, the call SafetyBench's `logprobs`
mode makes); the choice is the best-scored option and its confidence its probability normalized over the 15
options (`option_mass` keeps their unnormalized total, how much of the model's probability went to any option
at all). An `openai` endpoint gives no such scores for multi-token codes (its completions log-probabilities
are the top-20 next tokens, of the first token only), so there the labeler answers once at temperature 0,
the answer is parsed, and the confidence is null: such a choice is never applied automatically, only shown
to the person as the proposal. `method.taxonomy_choice_scores: false` asks that way on a local backend too
(scoring 15 continuations of a long prompt per label is slow on a CPU; the demo does so). Plain functions and
the calls; no Dagster."""

from __future__ import annotations

import json
import logging
import math
import re

import polars as pl

from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.llm.resource import LLMBatch, LLMResource, ParseError
from madef_assets.llm.structured import choice_spec
from madef_assets.prompts import family_version, template

TEMPLATE = "taxonomy_choice"
NONE = "NONE"
OPTIONS = (*CATEGORIES, NONE)
ORIGIN = "llm_choice"
SCORING_BACKENDS = ("transformers", "vllm")
# A choice's outcome: applied as status llm_choice, or left to a person (with the choice as the proposal).
CHOSEN, UNSURE, UNPARSED = "chosen", "unsure", "unparsed"
CHOICE_SCHEMA = {
    "key": pl.Utf8,
    "label": pl.Utf8,
    "lang": pl.Utf8,
    "choice": pl.Utf8,
    "confidence": pl.Float64,
    "option_mass": pl.Float64,
    "mode": pl.Utf8,
    "status": pl.Utf8,
    "error": pl.Utf8,
    "raw_output": pl.Utf8,
    "cached": pl.Boolean,
    "origin": pl.Utf8,
}

_CJK = re.compile(r"[\u3400-\u9fff]")
_PREFIX = re.compile(r"^(?:category|answer|code|类别|分类|答案|代码)\s*[:：]\s*", re.IGNORECASE)
_WRAP = r"\s\"'“”‘’`*_\[\]【】()（）<>《》:：.,，。!！;；\-"
_WRAPPING = re.compile(rf"^[{_WRAP}]+|[{_WRAP}]+$")


def label_lang(label: str) -> str:
    """The prompt's language for a raw label: zh when it has a Chinese character, else en."""
    return "zh" if _CJK.search(label) else "en"


def category_lines(taxonomy: Taxonomy, lang: str) -> str:
    """The 14 categories as the prompt lists them, from the taxonomy file: code, name, examples (its keywords)."""
    lines = []
    for code, spec in taxonomy.categories.items():
        keywords = spec.get("keywords") or []
        if lang == "zh":
            examples = f"；例：{'、'.join(keywords)}" if keywords else ""
            lines.append(f"{code}：{spec.get('zh') or spec['name']}（{spec['name']}{examples}）")
        else:
            examples = f" (e.g. {', '.join(keywords)})" if keywords else ""
            lines.append(f"{code}: {spec['name']}{examples}")
    return "\n".join(lines)


def choice_prompts(labels: list[str], taxonomy: Taxonomy) -> list[str]:
    listed = {lang: category_lines(taxonomy, lang) for lang in ("zh", "en")}
    return [
        template(TEMPLATE, label_lang(label)).render(categories=listed[label_lang(label)], label=label)
        for label in labels
    ]


def parse_choice(text: str) -> str:
    """The one option the answer names: its first non-empty line, without surrounding quotes, brackets,
    markdown or punctuation and a leading `Category:` (类别：), must be exactly a code of OPTIONS (any case).
    Anything else (prose, two codes, an unknown code) raises ParseError."""
    line = next((candidate.strip() for candidate in text.splitlines() if candidate.strip()), "")
    cleaned = _WRAPPING.sub("", _PREFIX.sub("", _WRAPPING.sub("", line)))
    code = cleaned.upper()
    if code not in OPTIONS:
        raise ParseError(f"not one category code of {list(OPTIONS)}: {line[:60]!r}")
    return code


CHOICE_OUTPUT = choice_spec("taxonomy_choice", OPTIONS)


def option_confidence(scores: dict[str, float]) -> tuple[str | None, float | None, float | None]:
    """(choice, confidence, option_mass) from log-probabilities per option: the best-scored option (ties: the
    first in OPTIONS order), its probability normalized over OPTIONS, and the options' total probability.
    No finite score: (None, None, None)."""
    values = [float(scores.get(option, -math.inf)) for option in OPTIONS]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None, None, None
    top = max(finite)
    weights = [math.exp(v - top) if math.isfinite(v) else 0.0 for v in values]
    best = weights.index(max(weights))
    return OPTIONS[best], weights[best] / sum(weights), sum(math.exp(v) for v in finite)


def choose(
    labeler: LLMResource,
    rows: pl.DataFrame,
    taxonomy: Taxonomy,
    log: logging.Logger | None = None,
    scores: bool = True,
) -> tuple[pl.DataFrame, LLMBatch]:
    """The labeler's choice for each row (`key`, `label`) through the ledger: scored options on a local
    backend (unless `scores` is false: method.taxonomy_choice_scores), else one answer at temperature 0
    (confidence null). One CHOICE_SCHEMA row per input."""
    labels = rows["label"].to_list()
    prompts = choice_prompts(labels, taxonomy)
    version = family_version(TEMPLATE)
    scored = scores and labeler.backend in SCORING_BACKENDS
    if scored:
        batch = labeler.option_logprobs(prompts, OPTIONS, version, log=log)
    else:
        params = labeler.default_params.with_changes(temperature=0.0)
        batch = labeler.generate(
            prompts, version, params=params, parse=parse_choice, log=log, refusals=True, output=CHOICE_OUTPUT
        )
    records = []
    for label, key, result in zip(labels, rows["key"], batch.results, strict=True):
        choice = confidence = mass = None
        status, error = result.status, result.error
        if status == "ok" and scored:
            choice, confidence, mass = option_confidence(result.value)
            if choice is None:
                status, error = "parse_error", "no option has a finite score"
        elif status == "ok":
            choice = result.value
        records.append(
            {
                "key": key,
                "label": label,
                "lang": label_lang(label),
                "choice": choice,
                "confidence": confidence,
                "option_mass": mass,
                "mode": "option_scores" if scored else "generate",
                "status": status,
                "error": error,
                "raw_output": result.output if isinstance(result.output, str) else json.dumps(result.output),
                "cached": result.cached,
                "origin": ORIGIN,
            }
        )
    return pl.DataFrame(records, schema=CHOICE_SCHEMA), batch


def with_outcomes(choices: pl.DataFrame, min_confidence: float) -> pl.DataFrame:
    """`outcome` per choice: `chosen` (a category, confidence >= min_confidence: applied automatically),
    `unparsed` (no choice: the call failed, was refused or unparsable), else `unsure` (below the threshold,
    no confidence, or NONE: the automatic step never discards a label) — the last two go to a person."""
    unparsed = (pl.col("status") != "ok") | pl.col("choice").is_null()
    chosen = pl.col("choice").is_in(list(CATEGORIES)) & (pl.col("confidence").fill_null(-1.0) >= min_confidence)
    outcome = pl.when(unparsed).then(pl.lit(UNPARSED)).when(chosen).then(pl.lit(CHOSEN)).otherwise(pl.lit(UNSURE))
    return choices.with_columns(outcome=outcome)


def apply_taxonomy_choices(mapped: pl.DataFrame, choices: pl.DataFrame) -> pl.DataFrame:
    """label_taxonomy's rows with the labeler's choices: a proposed/unmapped intent label chosen confidently gets
    status `llm_choice` and the chosen category; one left unsure keeps its status with the chosen category as
    the proposal (similarity null: the proposal is no longer the nearest reviewed label's); every row gets
    `choice` and `choice_confidence`. The taxonomy file's mappings are never touched; human decisions are
    applied after this (apply_taxonomy_decisions) and win."""
    picked = choices.select(
        "key", choice="choice", choice_confidence="confidence", choice_outcome="outcome", kind=pl.lit("intent_label")
    ).unique("key", keep="first")
    table = mapped.join(picked, on=["kind", "key"], how="left")
    open_ = pl.col("status").is_in(("proposed", "unmapped")) & pl.col("choice_outcome").is_not_null()
    chosen = open_ & (pl.col("choice_outcome") == CHOSEN)
    proposed = open_ & pl.col("choice").is_in(list(CATEGORIES))
    return table.with_columns(
        status=pl.when(chosen).then(pl.lit(ORIGIN)).when(proposed).then(pl.lit("proposed")).otherwise("status"),
        category=pl.when(proposed).then("choice").otherwise("category"),
        similarity=pl.when(proposed).then(pl.lit(None, pl.Float64)).otherwise("similarity"),
    ).drop("choice_outcome")
