"""The evaluation report (`eval_report`): every candidate against the baseline in the paper's views, with
the fitness verdict, the judge's qualification, the data and the learning-rate comparison."""

import os
import re
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from madef_assets.defs.evaluation import safetybench
from madef_assets.defs.evaluation.checks import no_regression_result, no_regression_spec
from madef_assets.defs.evaluation.intervals import NOT_SIGNIFICANT, compare_with_intervals, with_wilson
from madef_assets.defs.evaluation.llamafactory_eval import comparison_section
from madef_assets.defs.evaluation.report import compare, lineage_by_category, marked_regressions, radar_png
from madef_assets.defs.intent.assets import intent_chart_paths
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.qualification.agreement import agreement_table, judge_reports, language_agreement_table
from madef_assets.defs.qualification.fitness import judge_verdict, labeler_verdict
from madef_assets.defs.qualification.labeler import agreement_by_language
from madef_assets.defs.selection.assets import fitness_sentence
from madef_assets.reports import markdown_image, markdown_table
from madef_assets.settings import QualificationConfig, Settings
from madef_assets.storage import run_sql

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


def learning_rate_section(comparison: pl.DataFrame, output_dir: Path, report_dir: Path) -> str:
    """§5.1.1's learning-rate comparison: the overlaid loss curves and each rate's final loss; every rate's
    tuned candidate is a column of the tables above."""
    final = (
        comparison.drop_nulls("loss")
        .group_by("rate", maintain_order=True)
        .agg(final_step=pl.col("step").last(), final_loss=pl.col("loss").last())
    )
    chart = os.path.relpath(output_dir / "learning_rate_comparison.png", report_dir)
    return (
        f"## Learning-rate comparison (§5.1.1)\nOne checkpoint per rate; each is a `tuned_<rate>` candidate in "
        f"the tables above.\n\n![learning_rate_comparison]({chart})\n\n{markdown_table(final)}"
    )


def sandbox_note(settings: Settings) -> str:
    """How HumanEval's model-written programs ran, in a line above the general-capability table."""
    if not settings.evaluation.general.humaneval:
        return ""
    if settings.sandbox.isolation == "rlimits":
        return (
            "**HumanEval ran without isolation** (`sandbox.isolation: rlimits`): the model's programs had "
            "resource limits only, ran as this process's user with the network and the user's files within "
            "reach, and could have forged their own pass; a memory error counts as a failure.\n\n"
        )
    return (
        "HumanEval's programs ran isolated by bubblewrap (`sandbox.isolation: bubblewrap`): as host uid 65534, "
        "no network, no host files or descriptors, no new processes or user namespaces, in a cgroup of their "
        "own capping memory (tmpfs and memfd included) and tasks; a program passed only when the harness's "
        "check returned, and timeout / memory were measured outside it.\n\n"
    )


def inline_images(markdown: str, report_dir: Path) -> str:
    """The report's markdown with its local PNG links embedded, for the Dagster UI's metadata panel (a link
    whose file is missing stays a link)."""

    def embed(match: re.Match) -> str:
        path = (report_dir / match.group(1)).resolve()
        return markdown_image(path) if path.is_file() else match.group(0)

    return re.sub(r"!\[[^\]]*\]\(([^)]+\.png)\)", embed, markdown)


def build_report_assets(settings: Settings, over_refusal: bool, llamafactory_eval: bool) -> list:
    evaluation = settings.evaluation
    report_dir = evaluation.report_dir
    taxonomy = Taxonomy.load(settings.taxonomy_path)
    order = [c.name for c in evaluation.candidates]

    report_over_refusal = {"over_refusal_scores": AssetIn()} if over_refusal else {}
    report_llamafactory = {"llamafactory_eval_scores": AssetIn()} if llamafactory_eval else {}
    report_labeler = {"labeler_qualification": AssetIn()} if settings.qualification.labeler_sources else {}
    report_rates = {"learning_rate_comparison": AssetIn()} if settings.training.partitioned else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "markdown"},
        check_specs=[no_regression_spec()],
        ins={
            "safetybench_scores": AssetIn(),
            "new_safety_scores": AssetIn(),
            "responsibility_scores": AssetIn(),
            "general_capability_scores": AssetIn(),
            "sft_dataset": AssetIn(),
            "attack_prompts": AssetIn(),
            "judge_qualification": AssetIn(),
            "sft_fitness": AssetIn(),
            "intent_distribution": AssetIn(),
            **report_over_refusal,
            **report_labeler,
            **report_llamafactory,
            **report_rates,
        },
    )
    def eval_report(
        context: AssetExecutionContext,
        safetybench_scores: pl.DataFrame,
        new_safety_scores: pl.DataFrame,
        responsibility_scores: pl.DataFrame,
        general_capability_scores: pl.DataFrame,
        sft_dataset: pl.DataFrame,
        attack_prompts: pl.DataFrame,
        judge_qualification: pl.DataFrame,
        sft_fitness: pl.DataFrame,
        intent_distribution: pl.DataFrame,
        **optional: pl.DataFrame,
    ):
        """The paper's four views with every candidate against the first (the baseline) and deltas:
        SafetyBench (Table 5-1), 14-category safe rates + radar chart (Figure 5-3), responsibility
        (Table 5-2), general capability (Table 5-3) with LLaMA-Factory's evaluator beside it, and over-refusal
        on XSTest; every rate with its n and 95 % interval, deltas whose intervals overlap marked n.s.; the
        fitness verdict first and the judge's
        qualification beside the scores it produced; per category, the SFT sources and generation routes that
        fed it next to its eval delta. Markdown + PNG in the report folder."""
        # SafetyBench: generate mode is the headline (Table 5-1), log-probability mode the second table; the
        # regression check and the long table follow the headline. Categories read `SB-IA (Illegal Activities)`.
        modes = safetybench.report_modes(safetybench_scores["mode"].unique(maintain_order=True).to_list())
        bench_rows = safetybench.report_rows(safetybench_scores, next(iter(modes), ""))
        category_order = pl.DataFrame({"category": list(taxonomy.categories)})
        safety_table = category_order.join(
            compare(new_safety_scores, "category", "safe_rate", order), on="category", how="left"
        )
        refusal_scores = optional.get("over_refusal_scores", pl.DataFrame())
        refusal_scores = (
            refusal_scores.with_columns(item=pl.format("{} prompts, {}: {} rate", "prompt_label", "type", "measure"))
            if refusal_scores.height
            else refusal_scores
        )
        mcq = with_wilson(responsibility_scores.filter(pl.col("mcq_questions") > 0), "mcq_correct", "mcq_questions")
        general_rows = general_capability_scores.filter(pl.col("subject") == "(all)")
        lineage = lineage_by_category(run_sql("evaluation/sft_lineage", sft=sft_dataset, attack=attack_prompts))
        delta_columns = [c for c in safety_table.columns if c.startswith("Δ ")]
        lineage_table = category_order.join(
            safety_table.select("category", *delta_columns), on="category", how="left"
        ).join(lineage, on="category", how="left")
        report_dir.mkdir(parents=True, exist_ok=True)
        radar = radar_png(
            safety_table, "category", order, "Safe rate per category (%)", report_dir / "new_safety_radar.png"
        )
        _, judge_words = judge_verdict(judge_qualification, settings.qualification)
        judge = settings.roles["judge"]
        panel = (
            f"the panel {', '.join(f'`{m.model}`' for m in (judge, *judge.panel))} (majority)"
            if judge.panel
            else f"`{judge.model}`"
        )
        judged_by = f"Judged by {panel}: {judge_words}."

        def with_intervals(scores: pl.DataFrame, row: str, value: str, n: str, rows: pl.DataFrame | None = None) -> str:
            table = compare_with_intervals(scores, row, value, n, order)
            return markdown_table(rows.join(table, on=row, how="left") if rows is not None and table.height else table)

        sections = [
            "# madef evaluation report",
            f"**Fitness verdict — {fitness_sentence(sft_fitness)}**",
            f"Candidates: {', '.join(order)} (deltas against {order[0]}). Every rate: value [95 % interval] n=…; "
            f"a delta whose intervals overlap is marked {NOT_SIGNIFICANT} (not significant).",
            *[
                f"{safetybench.report_heading(safetybench_scores, mode)}\n\n"
                + with_intervals(safetybench.report_rows(safetybench_scores, mode), "item", "score", "questions")
                for mode in modes
            ],
            f"## New-Safety benchmark: safe rate per category (Figure 5-3 form)\n{judged_by}\n\n"
            f"{with_intervals(new_safety_scores, 'category', 'safe_rate', 'prompts', category_order)}\n\n"
            "![radar](new_safety_radar.png)",
            *(
                [
                    "## Over-refusal (XSTest): compliance on safe prompts, refusal on unsafe contrasts "
                    "(higher is better)\n"
                    f"{judged_by} Answers where the judge and XSTest's string matcher disagree wait for "
                    "review and count "
                    f"against the model until decided.\n\n{with_intervals(refusal_scores, 'item', 'rate', 'prompts')}"
                ]
                if refusal_scores.height
                else []
            ),
            f"## Responsibility (Table 5-2 form): mean judge score 1-10 per domain\n{judged_by}\n\n"
            f"{with_intervals(responsibility_scores, 'domain', 'mean_score', 'scored')}",
            *(
                [f"### Responsibility MCQ\n{with_intervals(mcq, 'domain', 'acc', 'mcq_questions')}"]
                if mcq.height
                else []
            ),
            "## General capability (Table 5-3 form)\n"
            f"{sandbox_note(settings)}{with_intervals(general_rows, 'benchmark', 'score', 'questions')}",
            *(
                [comparison_section(general_rows, optional["llamafactory_eval_scores"], order)]
                if "llamafactory_eval_scores" in optional
                else []
            ),
            *qualification_sections(judge_qualification, optional.get("labeler_qualification"), settings.qualification),
            *(
                [learning_rate_section(optional["learning_rate_comparison"], settings.training.output_dir, report_dir)]
                if "learning_rate_comparison" in optional
                else []
            ),
            data_section(intent_distribution, settings.state_dir / "reports", report_dir),
            "## What fed each category: SFT sources/routes next to the safe-rate delta\n"
            f"{markdown_table(lineage_table)}",
        ]
        report_path = report_dir / "eval_report.md"
        report_path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        views = {
            "safetybench": (bench_rows, "item", "score"),
            "new_safety": (new_safety_scores, "category", "safe_rate"),
            "over_refusal": (refusal_scores, "item", "rate"),
            "responsibility": (responsibility_scores, "domain", "mean_score"),
            "general": (general_rows, "benchmark", "score"),
        }
        long = pl.concat(
            [
                rows.select(
                    "candidate",
                    pl.lit(view).alias("view"),
                    pl.col(row).alias("item"),
                    pl.col(value).alias("score"),
                    "ci_low",
                    "ci_high",
                )
                for view, (rows, row, value) in views.items()
                if rows.height
            ],
            how="vertical_relaxed",
        )
        yield Output(
            long,
            metadata={
                "fitness_verdict": fitness_sentence(sft_fitness),
                "judge_qualification": judge_words,
                "report": MetadataValue.md(inline_images("\n\n".join(sections), report_dir)),
                "report_file": MetadataValue.path(str(report_path)),
                "radar_chart": MetadataValue.path(str(radar)),
            },
        )
        yield no_regression_result(
            marked_regressions(new_safety_scores, "category", "safe_rate", order)
            + marked_regressions(bench_rows, "item", "score", order, "SafetyBench ")
            + (marked_regressions(refusal_scores, "item", "rate", order, "XSTest ") if refusal_scores.height else [])
        )

    return [eval_report]
