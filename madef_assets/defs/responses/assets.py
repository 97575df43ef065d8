"""Safe responses: the responder model answers every selected prompt with a safety chain of thought."""

import polars as pl
from dagster import AssetExecutionContext, Output

from madef_assets.defs.copies import is_copy_error
from madef_assets.defs.llm_steps import LLMStep, llm_asset, llm_gate_results
from madef_assets.defs.responses.cot import COT_OUTPUT, STOP_SEQUENCES, copy_problem, parse_cot
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import template
from madef_assets.settings import MethodConfig, Settings

GROUP = "responses"


def safe_response_step(method: MethodConfig) -> LLMStep:
    """The responder's chain of thought (`reasoning`) and final answer (`safe_response`) per attack prompt; an
    answer that copies the template's worked example or repeats the prompt is a `parse_error`."""

    def copied(answer: tuple[str, str], row: dict) -> str | None:
        example = template("safe_response", row["lang"]).example_text
        return copy_problem(
            *answer, row["prompt"], example, method.contamination_zh_chars, method.contamination_en_words
        )

    return LLMStep(
        name="safe_responses",
        role="responder",
        template="safe_response",
        parse=parse_cot,
        columns=lambda answers: {
            "reasoning": pl.Series([a and a[0] for a in answers], dtype=pl.Utf8),
            "safe_response": pl.Series([a and a[1] for a in answers], dtype=pl.Utf8),
        },
        keep=("prompt_id", "category", "lang", "prompt", pl.col("response").alias("original_response")),
        params=lambda defaults: defaults.with_changes(stop=tuple(defaults.stop) + STOP_SEQUENCES),
        reject=copied,
        output=COT_OUTPUT,
    )


def build_response_assets(settings: Settings) -> list:
    step = safe_response_step(settings.method)

    @llm_asset(settings, step.name, GROUP, step.role)
    def safe_responses(context: AssetExecutionContext, responder: LLMResource, attack_prompts: pl.DataFrame):
        """For every attack prompt: the responder's safety analysis (`reasoning`) and final safe answer
        (`safe_response`, the training response), next to the source's original response when it has one.
        An answer that copies the template's worked example or repeats the prompt is `parse_error`."""
        table, batch = step.run(context, responder, attack_prompts)
        copies = sum(map(is_copy_error, table["error"]))
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
