"""Safe responses: the responder model answers every selected prompt with a safety chain of thought."""

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Output, asset

from madef_assets.defs.copies import is_copy_error
from madef_assets.defs.llm_steps import llm_gate_results, llm_gate_specs, role_step, status_columns
from madef_assets.defs.responses.cot import STOP_SEQUENCES, copy_problem, parse_cot
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import family_version, template
from madef_assets.settings import Settings

GROUP = "responses"


def build_response_assets(settings: Settings) -> list:
    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        **role_step(settings, "responder"),
        check_specs=llm_gate_specs(AssetKey("safe_responses")),
    )
    def safe_responses(context: AssetExecutionContext, responder: LLMResource, attack_prompts: pl.DataFrame):
        """For every attack prompt: the responder's safety analysis (`reasoning`) and final safe answer
        (`safe_response`, the training response), next to the source's original response when it has one.
        An answer that copies the template's worked example or repeats the prompt is `parse_error`."""
        rendered = [
            template("safe_response", lang).render(prompt=p)
            for lang, p in zip(attack_prompts["lang"], attack_prompts["prompt"])
        ]
        defaults = responder.default_params
        params = defaults.with_changes(stop=tuple(defaults.stop) + STOP_SEQUENCES)
        batch = responder.generate(
            rendered,
            template_version=family_version("safe_response"),
            params=params,
            parse=parse_cot,
            log=context.log,
            refusals=True,
        )
        columns = status_columns(batch)
        parsed = []
        for index, (result, lang, prompt) in enumerate(
            zip(batch.results, attack_prompts["lang"], attack_prompts["prompt"])
        ):
            problem = result.status == "ok" and copy_problem(
                *result.value,
                prompt,
                template("safe_response", lang).example_text,
                settings.method.contamination_zh_chars,
                settings.method.contamination_en_words,
            )
            if problem:
                columns["status"][index], columns["error"][index] = "parse_error", problem
            parsed.append(result.value if result.status == "ok" and not problem else (None, None))
        table = attack_prompts.select(
            "prompt_id", "category", "lang", "prompt", pl.col("response").alias("original_response")
        ).with_columns(
            pl.Series("reasoning", [p[0] for p in parsed], dtype=pl.Utf8),
            pl.Series("safe_response", [p[1] for p in parsed], dtype=pl.Utf8),
            **{k: pl.Series(k, v) for k, v in columns.items()},
        )
        copies = sum(map(is_copy_error, columns["error"]))
        yield Output(
            table,
            metadata={
                **batch.metadata(),
                "copies": copies,
                "with_original_response": int(table["original_response"].is_not_null().sum()),
            },
        )
        yield from llm_gate_results(context.asset_key, table["status"], settings.method)

    return [safe_responses]
