"""CValues responsibility per candidate: open answers scored 1-10 by the judge, the MCQ choices and the
per-domain scores (review decisions applied)."""

from collections.abc import Callable
from statistics import median_low

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, Output, StaticPartitionsDefinition

from madef_assets.defs.evaluation.candidates import candidate_pools, per_candidate_asset, sample_per_group, sources_hash
from madef_assets.defs.evaluation.cvalues import RULE_SETS, parse_cvalues_choice
from madef_assets.defs.evaluation.intervals import bootstrap_mean_interval
from madef_assets.defs.evaluation.judged import (
    Verdicts,
    candidate_answers,
    in_row_language,
    judge_answers,
    scores_table,
)
from madef_assets.defs.evaluation.judging import RESPONSIBILITY_SCORE_OUTPUT, parse_responsibility_score, review_key
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.llm.resource import LLMResource, LLMResult
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

# The judge's responsibility score (CValues' human-evaluation scale).
RESPONSIBILITY_SCALE = (1.0, 10.0)


def build_responsibility_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    evaluation = settings.evaluation
    responsibility = evaluation.responsibility
    prompts_source = responsibility.prompts_source
    mcq_source = responsibility.mcq_source

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        pool_of=candidate_pools(settings),
        ins={"candidate_model": AssetIn(), "prompts": AssetIn(AssetKey(prompts_source))},
    )
    def responsibility_responses(context: AssetExecutionContext, candidate_model: pl.DataFrame, prompts: pl.DataFrame):
        """The candidate's answers to the CValues responsibility prompts, responsibility.per_domain per domain."""
        sample = sample_per_group(
            prompts.with_columns(domain=pl.col("source_category")),
            "domain",
            "prompt_id",
            responsibility.per_domain,
            evaluation.seed,
        )
        llm = llm_for(candidate_model, raw_prompts=False)
        return candidate_answers(
            context,
            llm,
            sample,
            ("prompt_id", "domain", "lang", "prompt"),
            "responsibility_response@1",
            llm.default_params,
            sources_hash(settings, [prompts_source]),
        )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        **role_step(settings, "judge"),
        deps=[AssetKey("judge_qualification")],
    )
    def responsibility_judgements(
        context: AssetExecutionContext, judge: LLMResource, responsibility_responses: pl.DataFrame
    ):
        """The judge's 1-10 responsibility score per answer (CValues' human-evaluation scale); an unparseable
        score is null and counted as unscored."""
        verdicts = judge_answers(
            context,
            judge,
            responsibility_responses,
            in_row_language("responsibility_judge"),
            "responsibility_judge",
            score_vote,
            params=judge.default_params.with_changes(max_new_tokens=4, stop=("\n",)),
            output=RESPONSIBILITY_SCORE_OUTPUT,
        )
        table = responsibility_responses.select("candidate", "prompt_id", "domain", "prompt", "response").with_columns(
            answered=pl.Series([i in verdicts.results for i in range(len(verdicts.rows))], dtype=pl.Boolean),
            score=pl.Series(panel_scores(verdicts), dtype=pl.Int64),
            judge_raw_output=verdicts.raw_outputs(),
        )
        return Output(table, metadata={**verdicts.metadata(), "unscored": int(table["score"].is_null().sum())})

    mcq_ins = {"mcq": AssetIn(AssetKey(mcq_source))} if mcq_source else {}

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        pool_of=candidate_pools(settings),
        ins={"candidate_model": AssetIn(), **mcq_ins},
    )
    def responsibility_mcq_predictions(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, **mcq: pl.DataFrame
    ):
        """The candidate's choice on each CValues responsibility MCQ as each of the five official evaluator
        rule sets reads it (回复1 / 回复2 / other / refuse / need_check; `choice_<rule set>`, cvalues.py);
        `choice` is the default rule set's (chinese_alpaca). An answer some rule set cannot read goes to the
        review queue. Empty when responsibility.mcq_source is not configured."""
        schema = {
            "candidate": pl.Utf8,
            "prompt_id": pl.Utf8,
            "domain": pl.Utf8,
            "prompt": pl.Utf8,
            "label": pl.Utf8,
            "response": pl.Utf8,
            "choice": pl.Utf8,
            **{f"choice_{rule_set}": pl.Utf8 for rule_set in RULE_SETS},
            "review_key": pl.Utf8,
        }
        if not mcq:
            context.add_output_metadata({"note": "no responsibility.mcq_source configured"})
            return pl.DataFrame(schema=schema)
        questions = mcq["mcq"]
        llm = llm_for(candidate_model, raw_prompts=False)
        batch = llm.generate(questions["prompt"].to_list(), "responsibility_mcq@1", log=context.log)
        responses = [r.value if r.status == "ok" else None for r in batch.results]
        table = pl.DataFrame(
            {
                "candidate": context.partition_key,
                "prompt_id": questions["prompt_id"],
                "domain": questions["source_category"],
                "prompt": questions["prompt"],
                "label": questions["response"],
                "response": responses,
                "choice": [parse_cvalues_choice(r) for r in responses],
                **{f"choice_{rs}": [parse_cvalues_choice(r, rs) for r in responses] for rs in RULE_SETS},
                "review_key": [
                    review_key("responsibility_mcq", context.partition_key, p, r)
                    for p, r in zip(questions["prompt_id"], responses)
                ],
            },
            schema=schema,
        )
        choices = {k: int(v) for k, v in table.group_by("choice").len().sort("choice").iter_rows()}
        context.add_output_metadata({**batch.metadata(), "choices": choices})
        return table

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def responsibility_scores(
        context: AssetExecutionContext,
        responsibility_judgements: pl.DataFrame,
        responsibility_mcq_predictions: pl.DataFrame,
        review_decisions: pl.DataFrame,
        responsibility_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Per domain: the judge's mean responsibility score, and MCQ acc / acc* averaged over CValues' five
        evaluator rule sets (Table 5-2) when the MCQ file is configured."""
        rule_sets = mcq_rule_set_scores(responsibility_mcq_predictions, review_decisions)
        table = run_sql("evaluation/responsibility_scores", judgements=responsibility_judgements, rule_sets=rule_sets)
        scores = {d: g["score"].drop_nulls().to_list() for (d,), g in responsibility_judgements.group_by("domain")}
        bounds = [
            bootstrap_mean_interval(scores.get(d, []), RESPONSIBILITY_SCALE, seed=evaluation.seed)
            for d in table["domain"]
        ]
        table = table.with_columns(
            ci_low=pl.Series([low for low, _ in bounds], dtype=pl.Float64),
            ci_high=pl.Series([high for _, high in bounds], dtype=pl.Float64),
        )
        shown = ("domain", "prompts", "scored", "mean_score", "ci_low", "ci_high", "mcq_questions", "acc", "acc_star")
        return scores_table(context, table, responsibility_responses, shown)

    return [
        responsibility_responses,
        responsibility_judgements,
        responsibility_mcq_predictions,
        responsibility_scores,
    ]


def score_vote(result: LLMResult, _row: int = 0) -> str:
    """One judge member's score as its vote ("7"), uncertain when the call failed or the score is unreadable."""
    score = parse_responsibility_score(result.value) if result.status == "ok" else None
    return str(score) if score is not None else UNCERTAIN


def panel_scores(verdicts: Verdicts) -> list[int | None]:
    """Each row's score: the lower median of the members' readable scores (one judge: its score), None when
    no member gave one. A scale is summarized by its median, not by a majority a 10-point scale rarely has."""
    scores: list[int | None] = []
    for row in range(len(verdicts.rows)):
        if row not in verdicts.results:
            scores.append(None)
            continue
        position = verdicts.judged.index(row)
        readable = [int(member[position]) for member in verdicts.answers.votes if member[position] != UNCERTAIN]
        scores.append(median_low(readable) if readable else None)
    return scores


def mcq_decided(predictions: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Each MCQ answer per official evaluator rule set, need_check replaced by the reviewer's decision."""
    return run_sql("evaluation/responsibility_mcq_decided", mcq_predictions=predictions, decisions=decisions)


def mcq_rule_set_scores(predictions: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """acc and acc* (and their counts) per candidate, domain and official evaluator rule set."""
    return run_sql("evaluation/responsibility_mcq_rule_sets", decided=mcq_decided(predictions, decisions))
