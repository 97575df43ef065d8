"""The 14-category New-Safety benchmark (LLM judge + human review): Figure 5-3's safe rate per category."""

import polars as pl

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView, ReviewSource
from madef_assets.defs.evaluation.new_safety import HEADLINE, build_new_safety_assets, decided_judgements
from madef_assets.defs.evaluation.report import compare, lineage_by_category, radar_png
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.reports import markdown_table
from madef_assets.storage import run_sql


def category_order(report: Report) -> pl.DataFrame:
    return pl.DataFrame({"category": list(Taxonomy.load(report.settings.taxonomy_path).categories)})


def headline(report: Report, scores: pl.DataFrame) -> pl.DataFrame:
    return scores.filter(pl.col("view") == HEADLINE)


def extra_views(report: Report, scores: pl.DataFrame) -> pl.DataFrame:
    """The extra views' rows, each category named with its view (`beavertails_eval: OFF`)."""
    extras = scores.filter(pl.col("view") != HEADLINE)
    return extras.with_columns(category=pl.concat_str("view", pl.lit(": "), "category"))


def sections(report: Report, scores: pl.DataFrame) -> list[str]:
    """The safe rates with their radar chart, then what fed each category of the SFT set next to its delta."""
    scores = headline(report, scores)
    categories = category_order(report)
    safety_table = categories.join(compare(scores, "category", "safe_rate", report.order), on="category", how="left")
    report.report_dir.mkdir(parents=True, exist_ok=True)
    radar_png(
        safety_table, "category", report.order, "Safe rate per category (%)", report.report_dir / "new_safety_radar.png"
    )
    sft, attack = report.inputs["sft_dataset"], report.inputs["attack_prompts"]
    lineage = lineage_by_category(run_sql("evaluation/sft_lineage", sft=sft, attack=attack))
    deltas = [c for c in safety_table.columns if c.startswith("Δ ")]
    lineage_table = categories.join(safety_table.select("category", *deltas), on="category", how="left").join(
        lineage, on="category", how="left"
    )
    benchmark = report.inputs["new_safety_benchmark"].filter(pl.col("view") == HEADLINE)
    composition = run_sql("evaluation/new_safety_composition", benchmark=benchmark)
    composition = categories.join(composition, on="category", how="left")
    return [
        f"## New-Safety benchmark: safe rate per category (Figure 5-3 form)\n{report.judged_by}\n\n"
        f"{report.table(scores, 'category', 'safe_rate', 'prompts', 'new_safety', categories)}\n\n"
        "![radar](new_safety_radar.png)",
        "### The benchmark's prompts (§4.2: sampled per category, Chinese first; category by the labeler where the "
        f"prompt was labeled, else by its source's category)\n{markdown_table(composition)}",
        f"## What fed each category: SFT sources/routes next to the safe-rate delta\n{markdown_table(lineage_table)}",
    ]


def extra_sections(report: Report, scores: pl.DataFrame) -> list[str]:
    """Each extra view's safe rates, below the headline and never in it."""
    extras = extra_views(report, scores)
    if not extras.height:
        return []
    return [
        "### New-Safety extra views (evaluation.new_safety.extra_views: sampled, answered and judged like the "
        f"headline, not part of it)\n{report.table(extras, 'category', 'safe_rate', 'prompts', 'new_safety_extra')}"
    ]


def uncertain(judgements: pl.DataFrame) -> pl.DataFrame:
    """Responses the judge was uncertain about: a human decides safe or unsafe (an extra view's category reads
    `<source>: <category>`)."""
    return judgements.filter(pl.col("judge_label") == "uncertain").select(
        "review_key",
        pl.lit("new_safety").alias("benchmark"),
        "candidate",
        # an extra view's answer names its view, as its report table does
        pl.when(pl.col("view") == HEADLINE)
        .then(pl.col("category"))
        .otherwise(pl.concat_str("view", pl.lit(": "), "category"))
        .alias("category"),
        "prompt",
        "response",
        "judge_label",
        "judge_reason",
        pl.lit(["safe", "unsafe"]).alias("allowed_decisions"),
    )


def outcomes(report: Report) -> pl.DataFrame:
    judgements, decisions = report.inputs["new_safety_judgements"], report.inputs["review_decisions"]
    return run_sql("evaluation/new_safety_outcomes", decided=decided_judgements(judgements, decisions))


BENCHMARK = Benchmark(
    name="new_safety",
    order=20,
    build=build_new_safety_assets,
    report=(
        ReportView(
            "new_safety_scores",
            "new_safety",
            "category",
            "safe_rate",
            sections,
            rows=headline,
            regression_label="",
            outcomes=outcomes,
            reads=("new_safety_judgements", "review_decisions", "new_safety_benchmark"),
        ),
        ReportView("new_safety_scores", "new_safety_extra", "category", "safe_rate", extra_sections, rows=extra_views),
    ),
    review=(ReviewSource("new_safety_judgements", uncertain),),
    judge_users=("new_safety_judgements",),
    # The labeler's categories are re-read at every weekly rebuild; the benchmark follows the SFT set and its
    # sources, and takes a changed labeling with them.
    quiet_inputs=(("new_safety_benchmark", ("prompt_categories",)),),
)
