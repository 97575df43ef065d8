"""Over-refusal (XSTest) per candidate: does the model still answer safe prompts that only look unsafe, and
does it refuse their unsafe contrasts? The judge classifies each answer (compliance / refusal / partial) with
the prompt and parser it was qualified on, XSTest's string matcher gives a second opinion, and answers where
the two disagree go to the review queue."""

import json
from collections.abc import Callable

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, Output, StaticPartitionsDefinition

from madef_assets.defs.evaluation.candidates import candidate_pools, per_candidate_asset, sample_per_group, sources_hash
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.evaluation.judged import candidate_answers, judge_answers, scores_table
from madef_assets.defs.evaluation.judging import review_key
from madef_assets.defs.evaluation.xstest import settled_class, string_match_class
from madef_assets.defs.guards import REFUSAL as REFUSAL_QUESTION
from madef_assets.defs.guards import require_answer
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.qualification.tasks import REFUSAL, REFUSAL_OUTPUT, parse_refusal_class
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMResource, LLMResult
from madef_assets.prompts import template
from madef_assets.reports import per_value
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

BENCHMARK = "over_refusal"
# The judge's refusal prompt exists in English, the language of XSTest.
JUDGE_LANG = "en"


def build_over_refusal_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    config = settings.evaluation.over_refusal
    source = config.source
    if not source:
        return []
    members = settings.roles["judge"].members
    for index, member in enumerate(members):
        # A guard without a refusal reading (Llama Guard, ShieldGemma) cannot judge this benchmark: said at load.
        where = "models.judge" + (f"[{index}]" if len(members) > 1 else "")
        require_answer(member.judge_format, REFUSAL_QUESTION, f"{where} (evaluation.over_refusal.source is set)")

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        pool_of=candidate_pools(settings),
        ins={"candidate_model": AssetIn(), "prompts": AssetIn(AssetKey(source))},
    )
    def over_refusal_responses(context: AssetExecutionContext, candidate_model: pl.DataFrame, prompts: pl.DataFrame):
        """The candidate's answers to the XSTest prompts (over_refusal.per_type per type, seeded; null: all 450),
        with the chat template when the model has one; `prompt_label` safe (should be answered) or unsafe."""
        sample = sample_per_group(
            prompts.with_columns(type=pl.col("source_category")),
            "type",
            "prompt_id",
            config.per_type,
            settings.evaluation.seed,
        )
        llm = llm_for(candidate_model, False)
        sample = sample.with_columns(
            prompt_label=pl.Series([json.loads(m)["label"] for m in sample["meta"]], dtype=pl.Utf8)
        )
        return candidate_answers(
            context,
            llm,
            sample,
            ("prompt_id", "type", "prompt_label", "prompt"),
            "over_refusal_response@1",
            llm.default_params.with_changes(max_new_tokens=config.max_new_tokens),
            sources_hash(settings, [source]),
            {"per_label": per_value(sample, "prompt_label")},
        )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        **role_step(settings, "judge"),
        deps=[AssetKey("judge_qualification")],
    )
    def over_refusal_judgements(
        context: AssetExecutionContext, judge: LLMResource, over_refusal_responses: pl.DataFrame
    ):
        """Each answer's class: the judge's (refusal_judge prompt and parser, as in judge_qualification; a
        panel's majority) and XSTest's string matcher's. Where they agree the class is settled; where they
        disagree, or the judge is uncertain, it is `uncertain` and goes to the review queue. A provider's
        moderation of the candidate (status refused) is a refusal; an answer that failed is uncertain. A WildGuard
        judge (`judge_format`) answers with its `Response refusal` line (compliance / refusal, never partial)."""
        prompt = template(REFUSAL.template, JUDGE_LANG)
        verdicts = judge_answers(
            context,
            judge,
            over_refusal_responses,
            lambda row: prompt.render(prompt=row["prompt"], response=row["response"]),
            REFUSAL.template,
            refusal_class,
            question=REFUSAL_QUESTION,
            parse=parse_refusal_class,
            output=REFUSAL_OUTPUT,
        )
        rows, judge_labels = verdicts.rows, verdicts.labels
        matcher = [string_match_class(r["response"]) if i in verdicts.results else None for i, r in enumerate(rows)]
        final = [
            "refusal" if r["status"] == "refused" else settled_class(j, m)
            for r, j, m in zip(rows, judge_labels, matcher)
        ]
        table = over_refusal_responses.select(
            "candidate", "prompt_id", "type", "prompt_label", "prompt", "response"
        ).with_columns(
            judge_label=pl.Series(judge_labels, dtype=pl.Utf8),
            matcher_label=pl.Series(matcher, dtype=pl.Utf8),
            final_label=pl.Series(final, dtype=pl.Utf8),
            judge_raw_output=verdicts.raw_outputs(),
            review_key=pl.Series(
                [review_key(BENCHMARK, context.partition_key, r["prompt_id"], r["response"]) for r in rows]
            ),
        )
        agreeing = sum(f != UNCERTAIN for f, m in zip(final, matcher) if m is not None)
        return Output(
            table,
            metadata={
                **verdicts.metadata(),
                "judge_and_matcher_agree": agreeing,
                "to_review": final.count(UNCERTAIN),
                "final_labels": per_value(table, "final_label"),
            },
        )

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def over_refusal_scores(
        context: AssetExecutionContext,
        over_refusal_judgements: pl.DataFrame,
        review_decisions: pl.DataFrame,
        over_refusal_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Compliance rate on the safe prompts and refusal rate (full or partial) on the unsafe contrasts, per
        XSTest type and over all types, with Wilson 95 % intervals; pending reviews count against the model."""
        table = with_wilson(
            run_sql(
                "evaluation/over_refusal_scores", decided=decided_answers(over_refusal_judgements, review_decisions)
            ),
            "good",
            "prompts",
        )
        shown = ("prompt_label", "type", "measure", "prompts", "compliance", "refusal", "partial", "pending_review")
        return scores_table(context, table, over_refusal_responses, (*shown, "rate", "ci_low", "ci_high"))

    return [over_refusal_responses, over_refusal_judgements, over_refusal_scores]


def decided_answers(judgements: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Each answer's final class after review and whether it meets its measure, per type and under '(all)'."""
    return run_sql("evaluation/over_refusal_decided", judgements=judgements, decisions=decisions)


def refusal_class(result: LLMResult, _row: int = 0) -> str:
    """One judge answer's class (compliance / refusal / partial), uncertain when the call did not succeed."""
    return parse_refusal_class(result.value) if result.status == "ok" else UNCERTAIN
