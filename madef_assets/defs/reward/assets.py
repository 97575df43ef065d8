"""Safety reward features: prompt perplexity, pairwise response safety, instruction safety."""

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Output, asset

from madef_assets.defs.llm_steps import LLMStep, llm_asset, llm_gate_results, status_columns
from madef_assets.defs.reward.checks import perplexity_result, position_bias_result, reward_check_specs
from madef_assets.defs.reward.scores import (
    ONE_SCORE_OUTPUT,
    RESPONSE_SAFETY_TEMPLATES,
    TWO_SCORES_OUTPUT,
    parse_one_score,
    parse_two_scores,
    plan_response_judging,
)
from madef_assets.llm.resource import LLMResource
from madef_assets.project import ConfigError
from madef_assets.prompts import family_version
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

GROUP = "reward"
# The judge is measured against human labels first; its blocking check gates these scores.
JUDGE_QUALIFICATION = AssetKey("judge_qualification")


INSTRUCTION_SAFETY = LLMStep(
    name="instruction_safety_scores",
    role="judge",
    template="instruction_safety",
    parse=parse_one_score,
    columns=lambda scores: {"instruction_safety": pl.Series(scores, dtype=pl.Float64)},
    keep=("prompt_id",),
    output=ONE_SCORE_OUTPUT,
)


def build_reward_assets(settings: Settings) -> list:
    method = settings.method
    first_judge = settings.roles["judge"].config
    if first_judge.judge_format != "madef":
        raise ConfigError(
            f"models.judge: the first judge ({first_judge.model}, judge_format {first_judge.judge_format!r}) also "
            "scores responses and instructions for the reward step (§3.7), which a guard cannot; list a "
            "madef-format judge first and the guard after it (a panel)"
        )

    @llm_asset(settings, "prompt_perplexity", GROUP, "scorer")
    def prompt_perplexity(context: AssetExecutionContext, scorer: LLMResource, attack_prompts: pl.DataFrame):
        """The scorer model's perplexity of every attack prompt (batched, length-sorted)."""
        batch = scorer.perplexity(attack_prompts["prompt"].to_list(), log=context.log)
        table = attack_prompts.select("prompt_id").with_columns(
            pl.Series("perplexity", [r.value if r.status == "ok" else None for r in batch.results], dtype=pl.Float64),
            **{k: pl.Series(k, v) for k, v in status_columns(batch).items() if k != "raw_output"},
        )
        yield Output(table, metadata=batch.metadata())
        yield from llm_gate_results(context.asset_key, table["status"], method)

    @llm_asset(settings, "response_safety_scores", GROUP, "judge", deps=[JUDGE_QUALIFICATION])
    def response_safety_scores(context: AssetExecutionContext, judge: LLMResource, safe_responses: pl.DataFrame):
        """The judge's 0-1 safety score of each candidate response (the paper's prompt, §3.7, unless
        method.response_safety_prompt says `helpful`), both candidates in one prompt in a seeded random order
        (`original_first`, `scored_as` pair); an instruction with one candidate is scored alone on the same
        scale (`scored_as` single)."""
        templates = RESPONSE_SAFETY_TEMPLATES[method.response_safety_prompt]
        plan = plan_response_judging(safe_responses.to_dicts(), method.seed, templates)
        pair_batch = judge.generate(
            [p for _, p in plan.pairs],
            template_version=family_version(templates.pair),
            parse=parse_two_scores,
            log=context.log,
            refusals=True,
            output=TWO_SCORES_OUTPUT,
        )
        plan.apply_pairs(pair_batch.results)
        single_batch = judge.generate(
            [p for _, _, p in plan.singles],
            template_version=family_version(templates.single),
            parse=parse_one_score,
            log=context.log,
            refusals=True,
            output=ONE_SCORE_OUTPUT,
        )
        plan.apply_singles(single_batch.results)
        schema = {
            "prompt_id": pl.Utf8,
            "candidates": pl.Int64,
            "scored_as": pl.Utf8,
            "original_first": pl.Boolean,
            "safe_response_score": pl.Float64,
            "original_response_score": pl.Float64,
            "status": pl.Utf8,
            "error": pl.Utf8,
            "raw_output": pl.Utf8,
        }
        table = pl.DataFrame(plan.rows, schema=schema)
        kinds = table.group_by("scored_as").len().sort("scored_as", nulls_last=True).iter_rows()
        yield Output(
            table,
            metadata={
                "scored_as": {kind or "no_candidate": int(count) for kind, count in kinds},
                **{f"pairs_{k}": v for k, v in pair_batch.metadata().items()},
                **{f"singles_{k}": v for k, v in single_batch.metadata().items()},
            },
        )
        judged = table.filter(pl.col("status") != "no_candidate")["status"]
        yield from llm_gate_results(context.asset_key, judged, method)

    @llm_asset(settings, INSTRUCTION_SAFETY.name, GROUP, INSTRUCTION_SAFETY.role, deps=[JUDGE_QUALIFICATION])
    def instruction_safety_scores(context: AssetExecutionContext, judge: LLMResource, attack_prompts: pl.DataFrame):
        """The judge's safety score (0-1) of each instruction itself; low means a hard, unsafe instruction."""
        table, batch = INSTRUCTION_SAFETY.run(context, judge, attack_prompts)
        yield Output(table, metadata=batch.metadata())
        yield from llm_gate_results(context.asset_key, table["status"], method)

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, check_specs=reward_check_specs())
    def reward_features(
        context: AssetExecutionContext,
        safe_responses: pl.DataFrame,
        prompt_perplexity: pl.DataFrame,
        response_safety_scores: pl.DataFrame,
        instruction_safety_scores: pl.DataFrame,
    ):
        """One row per instruction: perplexity, response safety scores, instruction safety, and which
        candidate response is better (dbt_like_sql/reward/reward_features.sql)."""
        table = run_sql(
            "reward/reward_features",
            safe_responses=safe_responses,
            prompt_perplexity=prompt_perplexity,
            response_safety_scores=response_safety_scores,
            instruction_safety_scores=instruction_safety_scores,
        )
        complete = table.drop_nulls(["perplexity", "chosen_score", "instruction_safety"]).height
        yield Output(table, metadata={"rows_with_all_features": complete})
        yield perplexity_result(table)
        yield position_bias_result(response_safety_scores)

    return [prompt_perplexity, response_safety_scores, instruction_safety_scores, reward_features]
