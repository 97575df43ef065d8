"""The labeler's qualification: gold categories from the sources' own categories, a seeded sample per
language and category, the pipeline's rule from intent labels to a category, and agreement per language.
Plain functions, no Dagster."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.qualification.metrics import agreement_report
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMResult
from madef_assets.prompts import template

ALL_LANGUAGES = "all"
LABELING_SCHEMA = {
    "prompt_id": pl.Utf8,
    "source": pl.Utf8,
    "lang": pl.Utf8,
    "gold_category": pl.Utf8,
    "labels": pl.List(pl.Utf8),
    "predicted_category": pl.Utf8,
    "status": pl.Utf8,
    "raw_output": pl.Utf8,
}


def gold_prompts(prompts: pl.DataFrame, taxonomy: Taxonomy) -> tuple[pl.DataFrame, dict[str, int]]:
    """The prompts whose source category maps to one of the 14 categories, with it as `gold_category`, and
    the rows left out because theirs maps to none, counted per `source/source_category`."""
    gold = [
        taxonomy.map_source_category(source, category)
        for source, category in zip(prompts["source"], prompts["source_category"], strict=True)
    ]
    mapped = prompts.with_columns(gold_category=pl.Series(gold, dtype=pl.Utf8))
    unmapped = mapped.filter(pl.col("gold_category").is_null()).group_by("source", "source_category").len()
    excluded = {
        f"{source}/{category}": count
        for source, category, count in unmapped.sort("source", "source_category").iter_rows()
    }
    return mapped.filter(pl.col("gold_category").is_not_null()), excluded


def sample_per_category(gold: pl.DataFrame, per_category: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of `per_category` prompts per (language, gold category), all of a smaller group
    (None: every prompt); the same rows, whatever order they come in."""
    ordered = gold.sort("prompt_id", "source")
    if per_category is not None and ordered.height:
        ordered = ordered.group_by("lang", "gold_category", maintain_order=True).map_groups(
            lambda group: group.sample(n=min(per_category, group.height), seed=seed)
        )
    return ordered.sort("lang", "gold_category", "prompt_id", "source")


def labeling_prompts(sample: pl.DataFrame) -> list[str]:
    """The pipeline's labeling prompt (intent_labels': template intent_label in the prompt's language)."""
    return [
        template("intent_label", lang).render(prompt=prompt)
        for lang, prompt in zip(sample["lang"], sample["prompt"], strict=True)
    ]


def predicted_category(status: str, labels: Sequence[str] | None, taxonomy: Taxonomy) -> str:
    """The category the pipeline gives a labeled prompt (prompt_categories.sql: the majority of its labels
    mapped through the taxonomy, ties to the label named first), or `uncertain` when the call gave no
    labels (failed, refused, unparsable) or none of them maps."""
    category = taxonomy.label_category(list(labels)) if status == "ok" and labels else None
    return category or UNCERTAIN


def labeling_table(sample: pl.DataFrame, results: Sequence[LLMResult], taxonomy: Taxonomy) -> pl.DataFrame:
    """One row per sampled prompt: its gold category, the labeler's labels and the category they give."""
    labels = [list(r.value) if r.status == "ok" else [] for r in results]
    predicted = [predicted_category(r.status, row, taxonomy) for r, row in zip(results, labels, strict=True)]
    return (
        sample.with_columns(
            labels=pl.Series(labels, dtype=pl.List(pl.Utf8)),
            predicted_category=pl.Series(predicted, dtype=pl.Utf8),
            status=pl.Series([r.status for r in results], dtype=pl.Utf8),
            raw_output=pl.Series([r.output if isinstance(r.output, str) else None for r in results], dtype=pl.Utf8),
        )
        .select(list(LABELING_SCHEMA))
        .cast(LABELING_SCHEMA)
    )


def agreement_by_language(table: pl.DataFrame, n_resamples: int, seed: int) -> dict[str, dict]:
    """`agreement_report` over the 14 categories (no positive class; macro-F1 instead) for each language,
    then for all of them together (`all`)."""
    groups = {lang: table.filter(pl.col("lang") == lang) for lang in sorted(table["lang"].unique())}
    groups[ALL_LANGUAGES] = table
    return {
        name: agreement_report(
            rows["gold_category"].to_list(), rows["predicted_category"].to_list(), CATEGORIES, None, n_resamples, seed
        )
        for name, rows in groups.items()
    }
