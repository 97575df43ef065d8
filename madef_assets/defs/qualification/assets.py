"""Group `qualification`: the judge measured against human labels before its scores are used, the labeler
against the data sets' own categories before its labels are, and its taxonomy choice against people's mapping
of raw labels."""

import hashlib
import json
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)

from madef_assets.defs.frames import concat_prompts
from madef_assets.defs.guards import can_answer
from madef_assets.defs.intent.choice import choose, with_outcomes
from madef_assets.defs.intent.labels import LABELS_OUTPUT, parse_labels
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.panel import PanelAnswers, ask_panel, member_names
from madef_assets.defs.qualification.agreement import (
    JUDGEMENT_SCHEMA,
    agreement_table,
    gate_task,
    judge_reports,
    language_agreement_table,
)
from madef_assets.defs.qualification.fitness import qualification_verdict
from madef_assets.defs.qualification.gold import pku_saferlhf_pairs, xstest_human_labels
from madef_assets.defs.qualification.labeler import (
    ALL_LANGUAGES,
    agreement_by_language,
    gold_prompts,
    labeling_prompts,
    labeling_table,
    sample_per_category,
)
from madef_assets.defs.qualification.tasks import TASKS, UNCERTAIN, GoldSets, Task, sample_gold, sample_pairs
from madef_assets.defs.qualification.taxonomy_choice import choice_agreement, choice_gold
from madef_assets.defs.reward.scores import RESPONSE_SAFETY_TEMPLATES
from madef_assets.llm.resource import LLMResource
from madef_assets.project import ConfigError
from madef_assets.prompts import family_version
from madef_assets.reports import heatmap_png, markdown_image
from madef_assets.settings import QualificationConfig, Settings

GROUP = "qualification"
JUDGE_QUALIFIED = "judge_qualified"
LABELER_QUALIFIED = "labeler_qualified"
LABELER_QUALIFICATION = AssetKey("labeler_qualification")


def confusion_metadata(report: dict, model: str, report_dir: Path) -> dict:
    """The labeler's 14 × 15 confusion (rows gold, columns predicted with `uncertain`; the gold row
    `uncertain` is empty by construction and left out) as counts and as a PNG heat map."""
    columns = [*CATEGORIES, UNCERTAIN]
    counts = report["confusion"][: len(CATEGORIES)]
    chart = heatmap_png(
        counts,
        list(CATEGORIES),
        columns,
        f"Labeler ({model}) vs the sources' categories",
        report_dir / "labeler_confusion.png",
        row_title="gold",
        column_title="predicted",
    )
    return {
        "confusion": {"rows_gold": list(CATEGORIES), "columns_predicted": columns, "counts": counts},
        "confusion_chart": MetadataValue.md(markdown_image(chart)),
        "confusion_chart_path": MetadataValue.path(str(chart)),
    }


def judged_rows(task: Task, rows: pl.DataFrame, answers: PanelAnswers) -> pl.DataFrame:
    """A task's rows of the judgement table: the judge's (or its panel's) label, the members' votes when
    it is a panel, and the first member's status and raw output."""
    results = answers.first.results
    votes = [",".join(v) for v in zip(*answers.votes)] if len(answers.models) > 1 else [None] * rows.height
    table = rows.with_columns(
        task=pl.lit(task.name),
        gold_set=pl.lit(task.gold_set),
        judge_models=pl.lit(",".join(answers.models)),
        judge_label=pl.Series(answers.labels, dtype=pl.Utf8),
        panel_votes=pl.Series(votes, dtype=pl.Utf8),
        judge_status=pl.Series([r.status for r in results], dtype=pl.Utf8),
        judge_raw_output=pl.Series([r.output if isinstance(r.output, str) else None for r in results], dtype=pl.Utf8),
    )
    missing = [
        pl.lit(None, dtype=dtype).alias(column)
        for column, dtype in JUDGEMENT_SCHEMA.items()
        if column not in table.columns
    ]
    return table.with_columns(missing).select(list(JUDGEMENT_SCHEMA)).cast(JUDGEMENT_SCHEMA)


def gate_result(
    check_name: str,
    report: dict,
    verdict: tuple[bool, str],
    config: QualificationConfig,
    min_kappa: float,
    max_uncertain_rate: float,
) -> AssetCheckResult:
    """The blocking check's result: an error under `gate: block`, a warning (with its reason) under `warn`."""
    qualified, words = verdict
    return AssetCheckResult(
        check_name=check_name,
        passed=qualified,
        severity=AssetCheckSeverity.ERROR if config.gate == "block" else AssetCheckSeverity.WARN,
        description=words + (f" (gate: warn — {config.gate_reason})" if config.gate == "warn" else ""),
        metadata={
            "kappa": round(report["kappa"], 4),
            "kappa_ci": [round(v, 4) for v in report["kappa_ci"]],
            "uncertain_rate": round(report["unparsed_rate"], 4),
            "n": report["n"],
            "min_kappa": min_kappa,
            "max_uncertain_rate": max_uncertain_rate,
            "gate": config.gate,
        },
    )


def build_qualification_assets(settings: Settings) -> list:
    """The judge's qualification, the labeler's taxonomy choice against people's mapping of raw labels, and
    the labeler's qualification when qualification.labeler_sources names gold sources."""
    assets = [build_judge_qualification_asset(settings), build_taxonomy_choice_qualification_asset(settings)]
    if settings.qualification.labeler_sources:
        assets.append(build_labeler_qualification_asset(settings))
    return assets


def build_taxonomy_choice_qualification_asset(settings: Settings):
    config = settings.qualification

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        **role_step(settings, "labeler"),
        ins={"taxonomy_choices": AssetIn(), "taxonomy_decisions": AssetIn()},
    )
    def taxonomy_choice_qualification(
        context: AssetExecutionContext,
        labeler: LLMResource,
        taxonomy_choices: pl.DataFrame,
        taxonomy_decisions: pl.DataFrame,
    ) -> pl.DataFrame:
        """The labeler's taxonomy choice (taxonomy_choices' prompt and confidence, through the ledger) on raw
        labels people mapped: the taxonomy file's reviewed `labels:` list and the reviewers' taxonomy decisions
        (`ignore` = NONE; a decided label's choice is the one taxonomy_choices made, from the ledger). n,
        accuracy with its Wilson interval and Cohen's κ (bootstrap interval) over the 15 options, and the
        accuracy of the choices confident enough to be applied (method.taxonomy_choice_min_confidence). The
        reviewed list names categories nearly verbatim and people decide mostly the unsure labels, so neither
        part alone is the long tail's accuracy: both are shown apart (`by_origin`). Measures only; no gate."""
        taxonomy = Taxonomy.load(settings.taxonomy_path)
        gold, skipped = choice_gold(taxonomy, taxonomy_decisions, taxonomy_choices)
        choices, batch = choose(labeler, gold, taxonomy, context.log, settings.method.taxonomy_choice_scores)
        table = with_outcomes(choices, settings.method.taxonomy_choice_min_confidence).with_columns(
            gold_category=gold["gold_category"], gold_origin=gold["gold_origin"]
        )
        report = choice_agreement(table, config.n_resamples, config.seed)
        context.add_output_metadata(
            {
                **batch.metadata(),
                "labeler_model": labeler.model,
                "agreement": report,
                "n": report["n"],
                "accuracy": report.get("accuracy"),
                "kappa": report.get("kappa"),
                "decisions_without_label": len(skipped),
            }
        )
        return table

    return taxonomy_choice_qualification


def build_judge_qualification_asset(settings: Settings):
    config = settings.qualification

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        **role_step(settings, "judge"),
        check_specs=[
            AssetCheckSpec(
                JUDGE_QUALIFIED,
                asset=AssetKey("judge_qualification"),
                blocking=True,
                description="The judge's Cohen's κ against XSTest's human labels (refusal task) reaches "
                "qualification.min_kappa "
                "and its unparsed share stays under max_uncertain_rate; qualification.gate: warn only reports.",
            )
        ],
    )
    def judge_qualification(context: AssetExecutionContext, judge: LLMResource):
        """The judge labels human-labeled data with the prompts and parsers it uses in the pipeline, through
        the ledger: refusal vs compliance vs partial on XSTest's answers (gold: the human final label),
        response harmfulness on its unsafe prompts (the New-Safety judge prompt; a full compliance is unsafe)
        and on PKU-SafeRLHF's responses (gold: is_response_<i>_safe), and which of a PKU-SafeRLHF pair is
        safer (the reward step's pairwise scores; gold: safer_response_id). Beside it on XSTest, from the same
        files and the same metric code: human annotator 2 vs 1, GPT-4's labels and XSTest's string matcher.
        Accuracy, Cohen's κ, F1, the confusion and 95 % bootstrap intervals; the gate is the refusal task's.

        A guard member (`judge_format`, defs/guards.py) answers each task in its card's format on the row's
        prompt and answer; a task some member cannot answer (the pair task for every guard, refusal for Llama
        Guard and ShieldGemma) is left out and named in `skipped_tasks`, and without the refusal task the gate
        reads the harmfulness task (the same XSTest answers)."""
        xstest = xstest_human_labels(config.gold_dir)
        unparsed = xstest["unparsed_reference"].drop_nulls().to_list()
        gold = GoldSets(
            sample_gold(xstest, config.per_model, config.seed),
            sample_pairs(pku_saferlhf_pairs(config.pku_gold_file), config.pku_pairs, config.seed),
            RESPONSE_SAFETY_TEMPLATES[settings.method.response_safety_prompt].pair,
        )
        # A reference rater's label that is no class counts as its unparsed answer; the human gold stays whole.
        frames, metadata = (
            [],
            {"reference_labels_unparsed": len(unparsed), "reference_labels_unparsed_where": unparsed[:50]},
        )
        formats = [(name, member.config.judge_format) for name, member in zip(member_names(judge), judge.panel())]
        skipped = {}
        for task in TASKS:
            unable = [f"{name} ({kind})" for name, kind in formats if not can_answer(kind, task.question)]
            if unable:
                skipped[task.name] = f"{', '.join(unable)} cannot answer it"
                continue
            rows, excluded = task.rows(gold, config.seed)
            records = rows.to_dicts()
            answers = ask_panel(
                judge,
                records,
                family_version(task.template_for(gold)),
                lambda row: row["request"],
                lambda result, i: task.read(result.output, records[i]) if result.status == "ok" else UNCERTAIN,
                context.log,
                question=task.question,
                conversation=lambda row: (row["prompt"], row["completion"]),
                **({"output": task.output} if task.output is not None else {}),
            )
            frames.append(judged_rows(task, rows, answers))
            metadata[f"{task.name}_excluded_rows"] = excluded
            metadata.update({f"{task.name}_{k}": v for k, v in answers.metadata().items()})
        table = pl.concat(frames)
        reports = judge_reports(table, config)
        for task_name, raters in reports.items():
            judge_report = next(iter(raters.values()))  # the judge as used: alone or its panel's majority
            metadata[f"{task_name}_judge_kappa"] = {
                "kappa": round(judge_report["kappa"], 4),
                "kappa_ci": [round(v, 4) for v in judge_report["kappa_ci"]],
            }
            metadata[f"{task_name}_judge_confusion"] = {
                "labels": judge_report["labels"],
                "rows_gold_columns_judge": judge_report["confusion"],
            }
        gate = gate_task(set(reports))
        if gate is None:
            raise ConfigError(f"models.judge: the judge answers none of the gate's tasks ({skipped})")
        refusal = next(iter(reports[gate.name].values()))
        qualified, words = qualification_verdict(refusal, config.min_kappa, config.max_uncertain_rate)
        # Data version: the judge's labels and the verdict (the same after a re-run from the ledger).
        models = [member.model for member in judge.panel()]
        version = hashlib.sha256(json.dumps([models, words, table.rows()], default=str).encode()).hexdigest()
        yield Output(
            table,
            data_version=DataVersion(version),
            metadata={
                **metadata,
                "judge_model": ", ".join(models),
                "judge_formats": [kind for _, kind in formats],
                "skipped_tasks": skipped,
                "gate_task": gate.name,
                "verdict": words,
                "qualified": qualified,
                "agreement": agreement_table(reports),
                "gold_rows": gold.xstest.height,
                "pku_gold_pairs": gold.pku.height,
            },
        )
        yield gate_result(
            JUDGE_QUALIFIED, refusal, (qualified, words), config, config.min_kappa, config.max_uncertain_rate
        )

    return judge_qualification


def build_labeler_qualification_asset(settings: Settings):
    config = settings.qualification

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        **role_step(settings, "labeler"),
        ins={f"src_{name}": AssetIn(AssetKey(name)) for name in config.labeler_sources},
        check_specs=[
            AssetCheckSpec(
                LABELER_QUALIFIED,
                asset=LABELER_QUALIFICATION,
                blocking=True,
                description="The labeler's Cohen's κ against the sources' own categories (all languages) reaches "
                "qualification.labeler_min_kappa and its share of prompts without a category stays under "
                "labeler_max_uncertain_rate; qualification.gate: warn only reports.",
            )
        ],
    )
    def labeler_qualification(context: AssetExecutionContext, labeler: LLMResource, **sources: pl.DataFrame):
        """The labeler tags prompts whose category the data sets give (qualification.labeler_sources, mapped
        through the taxonomy; unmapped ones left out and counted), a seeded sample per language and category,
        with the pipeline's prompt and parser through the ledger; its labels become a category by the
        pipeline's rule (majority of the mapped labels). No category (failed, refused, unparsable or
        unmapped labels) is `uncertain` and counts against it. Accuracy, Cohen's κ, macro-F1 with 95 %
        bootstrap intervals per language and overall, and the confusion as a heat map."""
        taxonomy = Taxonomy.load(settings.taxonomy_path)
        gold, excluded = gold_prompts(concat_prompts(sources), taxonomy)
        sample = sample_per_category(gold, config.labeler_per_category, config.seed)
        batch = labeler.generate(
            labeling_prompts(sample),
            template_version=family_version("intent_label"),
            parse=parse_labels,
            log=context.log,
            refusals=True,
            output=LABELS_OUTPUT,
        )
        table = labeling_table(sample, batch.results, taxonomy)
        reports = agreement_by_language(table, config.n_resamples, config.seed)
        qualified, words = qualification_verdict(
            reports[ALL_LANGUAGES],
            config.labeler_min_kappa,
            config.labeler_max_uncertain_rate,
            "labeler",
            "categorised prompts",
        )
        # Data version: the labeler's labels and the verdict (the same after a re-run from the ledger).
        version = hashlib.sha256(json.dumps([labeler.model, words, table.rows()], default=str).encode()).hexdigest()
        yield Output(
            table,
            data_version=DataVersion(version),
            metadata={
                **batch.metadata(),
                "labeler_model": labeler.model,
                "verdict": words,
                "qualified": qualified,
                "agreement": MetadataValue.md(language_agreement_table(reports)),
                **confusion_metadata(reports[ALL_LANGUAGES], labeler.model, settings.state_dir / "reports"),
                "gold_rows": gold.height,
                "sampled_rows": sample.height,
                "excluded_rows": sum(excluded.values()),
                "excluded_by_source_category": excluded,
            },
        )
        yield gate_result(
            LABELER_QUALIFIED,
            reports[ALL_LANGUAGES],
            (qualified, words),
            config,
            config.labeler_min_kappa,
            config.labeler_max_uncertain_rate,
        )

    return labeler_qualification
