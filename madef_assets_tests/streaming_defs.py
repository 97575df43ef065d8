"""A code location with one option-log-prob asset on the bundled model's transformers backend, for the
kill-and-resume test of streamed local results (run by the `dagster` CLI in a subprocess or in-process).
Settings come from environment variables set by the test."""

import os

import polars as pl
from dagster import AssetExecutionContext, Definitions, asset, in_process_executor

from madef_assets.llm.resource import LLMResource
from madef_assets.settings import model_from_parts
from madef_assets.storage import MadefDuckDBIOManager


@asset
def option_scores(context: AssetExecutionContext, scorer: LLMResource) -> pl.DataFrame:
    prompts = [
        f"Question {i}: is {i} an even number?\n(A) yes\n(B) no\nAnswer: ("
        for i in range(int(os.environ["MADEF_TEST_PROMPTS"]))
    ]
    batch = scorer.option_logprobs(prompts, ["A", "B"], template_version="streaming-test-v1", log=context.log)
    context.add_output_metadata(batch.metadata())
    return pl.DataFrame({"prompt": prompts, "status": [r.status for r in batch.results]})


def resources_from_env() -> dict:
    database = os.environ["MADEF_DUCKDB_PATH"]
    scorer = LLMResource(
        role="scorer",
        config=model_from_parts("transformers", "bundled:gemma3-270m", {"batch_size": 4}, {}),
        duckdb_path=database,
        models_dir=os.environ["MADEF_MODELS_DIR"],
    )
    return {"io_manager": MadefDuckDBIOManager(database=database), "scorer": scorer}


defs = Definitions(assets=[option_scores], resources=resources_from_env(), executor=in_process_executor)
