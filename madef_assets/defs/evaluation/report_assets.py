"""The evaluation report (`eval_report`): every candidate against the baseline in each registered benchmark's
tables, with the fitness verdict, the judge's qualification, the data and the learning-rate comparison."""

import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from madef_assets.defs.evaluation.benchmark import Benchmark, Report, ReportView
from madef_assets.defs.evaluation.checks import no_regression_result, no_regression_spec
from madef_assets.defs.evaluation.rate_choice import RateChoice, choose_rate
from madef_assets.defs.evaluation.report import marked_regressions
from madef_assets.defs.evaluation.significance import OUTCOME_SCHEMA, TESTS_SENTENCE, paired_tests
from madef_assets.defs.intent.assets import intent_chart_paths
from madef_assets.defs.qualification.agreement import agreement_table, judge_reports, language_agreement_table
from madef_assets.defs.qualification.fitness import judge_verdict, labeler_verdict
from madef_assets.defs.qualification.labeler import agreement_by_language
from madef_assets.defs.selection.assets import fitness_sentence
from madef_assets.reports import markdown_image, markdown_table
from madef_assets.settings import QualificationConfig, Settings

GROUP = "evaluation"


def qualification_sections(
    judge_qualification: pl.DataFrame, labeler_qualification: pl.DataFrame | None, config: QualificationConfig
) -> list[str]:
    """The judge's agreement table (among the human, GPT-4 and string-matcher rows of the gold files) and
    the labeler's per language, each with its verdict, computed from their stored rows."""
    _, judge_words = judge_verdict(judge_qualification, config)
    sections = [
        f"## The judge against human labels (`judge_qualification`)\n{judge_words}\n\n"
        f"{agreement_table(judge_reports(judge_qualification, config))}"
    ]
    if labeler_qualification is not None:
        _, labeler_words = labeler_verdict(labeler_qualification, config)
        by_language = agreement_by_language(labeler_qualification, config.n_resamples, config.seed)
        sections.append(
            f"## The labeler against the sources' categories (`labeler_qualification`)\n{labeler_words}\n\n"
            f"{language_agreement_table(by_language)}"
        )
    return sections


def data_section(intent_distribution: pl.DataFrame, reports_dir: Path, report_dir: Path) -> str:
    """The data behind the SFT set as the paper's Figures 3-3..3-5 show it: prompts per source and
    category, and the top raw intent labels of each labeled source (charts drawn by intent_distribution)."""
    overall, per_source = intent_chart_paths(intent_distribution, reports_dir)
    images = [f"![{path.stem}]({os.path.relpath(path, report_dir)})" for path in (overall, *per_source.values())]
    return "## The data: intent distributions (Figures 3-3..3-5)\n" + "\n\n".join(images)


def learning_rate_section(
    comparison: pl.DataFrame, choice: RateChoice, rule: str, output_dir: Path, report_dir: Path
) -> str:
    """§5.1.1's learning-rate comparison: the rate chosen by `rule` and why, the overlaid loss curves and each
    rate's final loss; every rate's tuned candidate is a column of the tables above."""
    final = (
        comparison.drop_nulls("loss")
        .group_by("rate", maintain_order=True)
        .agg(final_step=pl.col("step").last(), final_loss=pl.col("loss").last())
    )
    chart = os.path.relpath(output_dir / "learning_rate_comparison.png", report_dir)
    compared = ", ".join(f"{rate} {value:.4g}" for rate, value in choice.values.items())
    chosen = (
        f"**Chosen: {choice.rate} (`{choice.candidate}`), by `{rule}`: {choice.reason}** (compared: {compared})."
        if choice.rate
        else f"**{choice.reason}** (training.choose_rate_by: `{rule}`)."
    )
    return (
        f"## Learning-rate comparison (§5.1.1)\n{chosen} One checkpoint per rate; each is a `tuned_<rate>` "
        f"candidate in the tables above.\n\n![learning_rate_comparison]({chart})\n\n{markdown_table(final)}"
    )


def long_table(rows: dict[ReportView, pl.DataFrame]) -> pl.DataFrame:
    """Every view's rows as one table: candidate, view, item, score, ci_low, ci_high."""
    return pl.concat(
        [
            table.select(
                "candidate",
                pl.lit(view.view).alias("view"),
                pl.col(view.row).alias("item"),
                pl.col(view.value).alias("score"),
                "ci_low",
                "ci_high",
            )
            for view, table in rows.items()
            if view.view is not None and table.height
        ],
        how="vertical_relaxed",
    )


def inline_images(markdown: str, report_dir: Path) -> str:
    """The report's markdown with its local PNG links embedded, for the Dagster UI's metadata panel (a link
    whose file is missing stays a link)."""

    def embed(match: re.Match) -> str:
        path = (report_dir / match.group(1)).resolve()
        return markdown_image(path) if path.is_file() else match.group(0)

    return re.sub(r"!\[[^\]]*\]\(([^)]+\.png)\)", embed, markdown)


def build_report_assets(settings: Settings, benchmarks: Sequence[Benchmark]) -> list:
    evaluation = settings.evaluation
    report_dir = evaluation.report_dir
    order = [c.name for c in evaluation.candidates]
    candidates_by_rate: dict[str, str] = {}
    for candidate in evaluation.candidates:
        if candidate.rate:
            candidates_by_rate.setdefault(candidate.rate, candidate.name)
    views = [view for spec in benchmarks for view in spec.report]

    report_labeler = {"labeler_qualification": AssetIn()} if settings.qualification.labeler_sources else {}
    report_rates = {"learning_rate_comparison": AssetIn()} if settings.training.partitioned else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "markdown"},
        check_specs=[no_regression_spec()],
        ins={
            **{asset: AssetIn() for view in views for asset in (view.scores_asset, *view.reads)},
            "sft_dataset": AssetIn(),
            "attack_prompts": AssetIn(),
            "judge_qualification": AssetIn(),
            "sft_fitness": AssetIn(),
            "intent_distribution": AssetIn(),
            **report_labeler,
            **report_rates,
        },
    )
    def eval_report(
        context: AssetExecutionContext,
        judge_qualification: pl.DataFrame,
        sft_fitness: pl.DataFrame,
        intent_distribution: pl.DataFrame,
        **inputs: pl.DataFrame,
    ):
        """Every candidate against the first (the baseline), in each registered benchmark's tables (the
        paper's views, in the benchmarks' order), every rate with its n and 95 % interval; the fitness verdict
        first, the judge's and the labeler's qualification, the learning-rate comparison and the data after
        them. Markdown + PNG in the report folder; a long table of every view's rows."""
        _, judge_words = judge_verdict(judge_qualification, settings.qualification)
        judge = settings.roles["judge"]
        panel = f"the panel {', '.join(f'`{m.model}`' for m in judge.members)} (majority)" if judge.panel else None
        report = Report(settings, inputs, order, report_dir, f"Judged by {panel or f'`{judge.model}`'}: {judge_words}.")
        outcomes = [view.outcomes(report) for view in views if view.outcomes is not None]
        outcomes = pl.concat(outcomes, how="vertical_relaxed") if outcomes else pl.DataFrame(schema=OUTCOME_SCHEMA)
        report = replace(report, tests=paired_tests(outcomes, order[0], settings.evaluation.seed))
        report_dir.mkdir(parents=True, exist_ok=True)
        rows = {view: view.rows(report, inputs[view.scores_asset]) for view in views}
        long = long_table(rows)
        rates = inputs.get("learning_rate_comparison")
        rule = settings.training.choose_rate_by
        choice = choose_rate(rule, rates, long, candidates_by_rate) if rates is not None else None
        sections = [
            "# madef evaluation report",
            f"**Fitness verdict — {fitness_sentence(sft_fitness)}**",
            f"Candidates: {', '.join(order)} (deltas against {order[0]}). Every rate: value [95 % interval] n=…. "
            f"Every delta is tested on the items both candidates answered: {TESTS_SENTENCE}",
            *[section for view in views for section in view.sections(report, inputs[view.scores_asset])],
            *qualification_sections(judge_qualification, inputs.get("labeler_qualification"), settings.qualification),
            *([learning_rate_section(rates, choice, rule, settings.training.output_dir, report_dir)] if choice else []),
            data_section(intent_distribution, settings.state_dir / "reports", report_dir),
        ]
        report_path = report_dir / "eval_report.md"
        report_path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        yield Output(
            long,
            metadata={
                **({"chosen_rate": choice.rate or "none", "rate_choice": choice.reason} if choice else {}),
                "paired_tests": len(report.tests),
                "significant_deltas": int(report.tests["significant"].sum()) if len(report.tests) else 0,
                "fitness_verdict": fitness_sentence(sft_fitness),
                "judge_qualification": judge_words,
                "report": MetadataValue.md(inline_images("\n\n".join(sections), report_dir)),
                "report_file": MetadataValue.path(str(report_path)),
            },
        )
        yield no_regression_result(
            [
                regression
                for view, table in rows.items()
                if view.regression_label is not None and table.height
                for regression in marked_regressions(
                    table, view.row, view.value, order, report.tests_of(view.view), view.regression_label
                )
            ]
        )

    return [eval_report]
