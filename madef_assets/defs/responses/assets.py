"""Safe responses: the responder model answers every selected prompt with a safety chain of thought."""

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Output, asset

from madef_assets.defs.llm_steps import parse_failure_check_spec, parse_failure_result, status_columns
from madef_assets.defs.responses.cot import STOP_SEQUENCES, parse_cot
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import family_version, template
from madef_assets.settings import Settings

GROUP = "responses"


def build_response_assets(settings: Settings) -> list:
    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool="duckdb", check_specs=[parse_failure_check_spec(AssetKey("safe_responses"))])
    def safe_responses(context: AssetExecutionContext, responder: LLMResource, attack_prompts: pl.DataFrame):
        """For every attack prompt: the responder's safety analysis (`reasoning`) and final safe answer
        (`safe_response`, the training response), next to the source's original response when it has one."""
        rendered = [template("safe_response", lang).render(prompt=p) for lang, p in zip(attack_prompts["lang"], attack_prompts["prompt"])]
        defaults = responder.default_params
        params = defaults.with_changes(stop=tuple(defaults.stop) + STOP_SEQUENCES)
        batch = responder.generate(rendered, template_version=family_version("safe_response"), params=params, parse=parse_cot, log=context.log)
        parsed = [r.value if r.status == "ok" else (None, None) for r in batch.results]
        table = attack_prompts.select("prompt_id", "category", "lang", "prompt", pl.col("response").alias("original_response")).with_columns(
            pl.Series("reasoning", [p[0] for p in parsed], dtype=pl.Utf8),
            pl.Series("safe_response", [p[1] for p in parsed], dtype=pl.Utf8),
            **{k: pl.Series(k, v) for k, v in status_columns(batch).items()},
        )
        yield Output(table, metadata={**batch.metadata(), "with_original_response": int(table["original_response"].is_not_null().sum())})
        yield parse_failure_result(context.asset_key, table["status"], settings.method.max_parse_failure_rate)

    return [safe_responses]
