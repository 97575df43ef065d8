"""The 14-category New-Safety benchmark: the sample (disjoint from the SFT set), each candidate's answers,
the judge's labels and the safe rate per category (review decisions applied)."""

from collections.abc import Callable

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, Output, StaticPartitionsDefinition, asset

from madef_assets.defs.evaluation.candidates import candidate_pools, per_candidate_asset, sample_per_group, sources_hash
from madef_assets.defs.evaluation.checks import disjoint_from_sft_result, disjoint_from_sft_spec
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.evaluation.judged import (
    Verdicts,
    candidate_answers,
    in_row_language,
    judge_answers,
    scores_table,
)
from madef_assets.defs.evaluation.judging import review_key
from madef_assets.defs.frames import concat_prompts
from madef_assets.defs.guards import HARM, GuardReading
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.qualification.tasks import SAFETY_OUTPUT
from madef_assets.defs.selection.contamination import contaminated
from madef_assets.defs.verdicts import UNCERTAIN, SafetyJudgement, parse_safety_judgement
from madef_assets.llm.resource import LLMResource, LLMResult
from madef_assets.reports import per_value
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

GROUP = "evaluation"
HEADLINE = "headline"  # the view of evaluation.new_safety.sources; an extra view is named by its source


def build_new_safety_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    evaluation = settings.evaluation
    taxonomy = Taxonomy.load(settings.taxonomy_path)
    new_safety = evaluation.new_safety
    new_safety_ins = {f"src_{name}": AssetIn(AssetKey(name)) for name in (*new_safety.sources, *new_safety.extra_views)}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        check_specs=[disjoint_from_sft_spec()],
        ins={**new_safety_ins, "sft_dataset": AssetIn(), "prompt_categories": AssetIn()},
    )
    def new_safety_benchmark(
        context: AssetExecutionContext,
        sft_dataset: pl.DataFrame,
        prompt_categories: pl.DataFrame,
        **sources: pl.DataFrame,
    ):
        """The 14-category open-ended benchmark as §4.2 builds it: evaluation.new_safety.per_category prompts
        per category, seeded, Chinese first; a prompt's category is the labeler's through the taxonomy (human
        decisions win, prompt_categories) where the prompt was labeled, else its source category mapped through
        the taxonomy (`category_origin`). Prompts in the SFT set or sharing a long n-gram with it are excluded
        first, and a blocking check confirms the result is disjoint. Each extra view (evaluation.new_safety.extra_views)
        is sampled the same way on its own, its rows named by their `view`; the headline's are `headline`."""
        pool = concat_prompts(sources).with_columns(
            view=pl.when(pl.col("source").is_in(new_safety.extra_views)).then("source").otherwise(pl.lit(HEADLINE))
        )
        mapped = benchmark_categories(pool, prompt_categories, taxonomy)
        unmapped = mapped.filter(pl.col("category").is_null())
        mapped = mapped.filter(pl.col("category").is_not_null())
        sft_texts = sft_dataset["instruction"].to_list()
        leaking = {
            key
            for key, _ in contaminated(
                zip(mapped["prompt_id"], mapped["prompt"]),
                sft_texts,
                settings.method.contamination_zh_chars,
                settings.method.contamination_en_words,
            )
        }
        clean = mapped.filter(~pl.col("prompt_id").is_in(list(leaking | set(sft_dataset["prompt_id"].to_list()))))
        views = [
            sample_language_first(clean.filter(pl.col("view") == view), new_safety.per_category, evaluation.seed)
            for view in (HEADLINE, *new_safety.extra_views)
        ]
        table = pl.concat(views, how="vertical_relaxed").select(
            "prompt_id", "view", "source", "lang", "category", "category_origin", "source_category", "prompt"
        )
        headline = table.filter(pl.col("view") == HEADLINE)
        per_category = {k: int(v) for k, v in headline.group_by("category").len().sort("category").iter_rows()}
        yield Output(
            table,
            metadata={
                "rows_in": pool.height,
                "unmapped_category": unmapped.height,
                "excluded_overlapping_sft": mapped.height - clean.height,
                "eligible": clean.height,
                "per_category": per_category,
                "category_origin": per_value(headline, "category_origin"),
                "languages": per_value(headline, "lang"),
                "extra_views": per_value(table.filter(pl.col("view") != HEADLINE), "view"),
                "categories_missing": [c for c in taxonomy.categories if c not in per_category],
            },
        )
        yield disjoint_from_sft_result(table, sft_dataset, settings.method)

    @per_candidate_asset(candidates, {"duckdb", "llm"}, pool_of=candidate_pools(settings))
    def new_safety_responses(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, new_safety_benchmark: pl.DataFrame
    ):
        """Each benchmark prompt answered by the candidate (chat template when the model has one)."""
        llm = llm_for(candidate_model, raw_prompts=False)
        return candidate_answers(
            context,
            llm,
            new_safety_benchmark,
            ("prompt_id", "view", "category", "lang", "prompt"),
            "new_safety_response@1",
            llm.default_params.with_changes(max_new_tokens=new_safety.max_new_tokens),
            sources_hash(settings, [*new_safety.sources, *new_safety.extra_views]),
        )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        **role_step(settings, "judge"),
        deps=[AssetKey("judge_qualification")],
    )
    def new_safety_judgements(context: AssetExecutionContext, judge: LLMResource, new_safety_responses: pl.DataFrame):
        """The judge's label per response: safe / unsafe / uncertain with a short reason (a panel's majority,
        its votes in the reason; a tie is uncertain). An unparseable verdict or a missing response is
        `uncertain` and goes to the review queue. A guard judge (`judge_format`) answers in its card's format;
        its reason names its categories and madef's (defs/guards.py)."""
        verdicts = judge_answers(
            context,
            judge,
            new_safety_responses,
            in_row_language("new_safety_judge"),
            "new_safety_judge",
            judgement_label,
            question=HARM,
            parse=parse_safety_judgement,
            output=SAFETY_OUTPUT,
        )
        parsed = [
            as_judgement(result.value) if result is not None and result.status == "ok" else None
            for result in map(verdicts.results.get, range(len(verdicts.rows)))
        ]
        table = new_safety_responses.select(
            "candidate", "prompt_id", "view", "category", "lang", "prompt", "response"
        ).with_columns(
            judge_label=pl.Series(verdicts.labels, dtype=pl.Utf8),
            judge_reason=pl.Series([judge_reason(verdicts, i, v) for i, v in enumerate(parsed)], dtype=pl.Utf8),
            judge_parsed=pl.Series([bool(v and v.parsed) for v in parsed]),
            judge_raw_output=verdicts.raw_outputs(),
            review_key=pl.Series(
                [
                    review_key("new_safety", context.partition_key, p, r)
                    for p, r in zip(new_safety_responses["prompt_id"], new_safety_responses["response"])
                ]
            ),
        )
        return Output(table, metadata={**verdicts.metadata(), "labels": per_value(table, "judge_label")})

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def new_safety_scores(
        context: AssetExecutionContext,
        new_safety_judgements: pl.DataFrame,
        review_decisions: pl.DataFrame,
        new_safety_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Safe rate per category for the candidate, with counts and how many labels came from review."""
        table = with_wilson(
            run_sql(
                "evaluation/new_safety_scores", decided=decided_judgements(new_safety_judgements, review_decisions)
            ),
            "safe",
            "prompts",
        )
        shown = ("view", "category", "prompts", "safe", "unsafe", "pending_review", "from_review", "safe_rate")
        return scores_table(context, table, new_safety_responses, (*shown, "ci_low", "ci_high"))

    return [new_safety_benchmark, new_safety_responses, new_safety_judgements, new_safety_scores]


def decided_judgements(judgements: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Each answer's final label after review (a decision over the judge's label), for the scores and outcomes."""
    return run_sql("evaluation/new_safety_decided", judgements=judgements, decisions=decisions)


def judgement_label(result: LLMResult, _row: int = 0) -> str:
    """A madef-format member's vote: its parsed judgement's label, uncertain when the call did not succeed."""
    return as_judgement(result.value).label if result.status == "ok" else UNCERTAIN


def as_judgement(value: SafetyJudgement | GuardReading | str | None) -> SafetyJudgement:
    """The first member's answer as a judgement: madef's parsed verdict, or a guard's reading (its reason
    naming the guard's categories and madef's)."""
    if isinstance(value, SafetyJudgement):
        return value
    if isinstance(value, GuardReading):
        return SafetyJudgement(value.label, value.reason(), value.parsed)
    return parse_safety_judgement(value)


def judge_reason(verdicts: Verdicts, row: int, verdict: SafetyJudgement | None) -> str:
    """The judge's reason, why there is none, and a panel's votes."""
    result = verdicts.results.get(row)
    if verdict:
        reason = verdict.reason
    elif result is not None:
        reason = f"judge call failed: {result.error}"
    else:
        reason = f"no answer to judge ({verdicts.rows[row]['status']}: {verdicts.rows[row]['error']})"
    votes = verdicts.votes(row)
    return f"panel votes {', '.join(votes)}; {reason}" if votes else reason


def benchmark_categories(pool: pl.DataFrame, prompt_categories: pl.DataFrame, taxonomy: Taxonomy) -> pl.DataFrame:
    """`pool` with `category` and `category_origin`: the labeler's category where the prompt was labeled
    (prompt_categories' origin `intent`), else its source category mapped through the taxonomy (`source`);
    null when neither gives one."""
    labeled = prompt_categories.filter(pl.col("category_origin") == "intent").select(
        "prompt_id", labeled_category=pl.col("category")
    )
    source_mapped = pl.Series(
        [taxonomy.map_source_category(s, c) for s, c in zip(pool["source"], pool["source_category"])], dtype=pl.Utf8
    )
    return (
        pool.with_columns(source_mapped=source_mapped)
        .join(labeled, on="prompt_id", how="left")
        .with_columns(
            category=pl.coalesce("labeled_category", "source_mapped"),
            category_origin=pl.when(pl.col("labeled_category").is_not_null())
            .then(pl.lit("intent"))
            .when(pl.col("source_mapped").is_not_null())
            .then(pl.lit("source")),
        )
        .drop("labeled_category", "source_mapped")
    )


def sample_language_first(
    prompts: pl.DataFrame, per_category: int | None, seed: int, first: str = "zh"
) -> pl.DataFrame:
    """`per_category` prompts per category (None: all), seeded, taking `first`-language prompts before the
    others (§4.2's benchmark is Chinese first)."""
    preferred = sample_per_group(prompts.filter(pl.col("lang") == first), "category", "prompt_id", per_category, seed)
    others = sample_per_group(prompts.filter(pl.col("lang") != first), "category", "prompt_id", per_category, seed)
    if per_category is None:
        return pl.concat([preferred, others], how="vertical_relaxed")
    taken = preferred.group_by("category").len()
    fill = (
        others.join(taken, on="category", how="left")
        .with_columns(rank=pl.int_range(pl.len()).over("category"))
        .filter(pl.col("rank") < per_category - pl.col("len").fill_null(0))
        .drop("len", "rank")
    )
    return pl.concat([preferred, fill], how="vertical_relaxed")
