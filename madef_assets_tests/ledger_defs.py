"""A small LLM-backed code location for ledger and concurrency tests (run in-process or by the
`dagster` CLI in a subprocess). Settings come from environment variables set by the tests."""

import os

import polars as pl
from dagster import AssetExecutionContext, Definitions, asset, in_process_executor

from madef_assets.llm.resource import LLMResource
from madef_assets.settings import model_from_parts
from madef_assets.storage import MadefDuckDBIOManager


def test_prompts(count: int) -> list[str]:
    return [f"question number {i}" for i in range(count)]


@asset(group_name="ledger_test", kinds={"duckdb", "openai"}, pool="duckdb")
def llm_answers(context: AssetExecutionContext, labeler: LLMResource) -> pl.DataFrame:
    """One answer per test prompt, through the ledger."""
    prompts = test_prompts(int(os.environ["MADEF_TEST_PROMPTS"]))
    batch = labeler.generate(prompts, template_version="ledger-test-v1", log=context.log)
    context.add_output_metadata(batch.metadata())
    return pl.DataFrame(
        {
            "prompt": prompts,
            "answer": [r.output for r in batch.results],
            "status": [r.status for r in batch.results],
            "cached": [r.cached for r in batch.results],
        }
    )


def resources_from_env() -> dict:
    database = os.environ["MADEF_DUCKDB_PATH"]
    options = {
        "base_url": os.environ.get("MADEF_TEST_OPENAI_URL", "http://127.0.0.1:9/v1"),
        "api_key_env": None,
        "concurrency": int(os.environ.get("MADEF_TEST_CONCURRENCY", "8")),
        "max_retries": 2,
        "backoff_base_s": 0.01,
    }

    labeler = LLMResource(
        role="labeler",
        config=model_from_parts("openai", "test-model", options, {"max_new_tokens": 8}),
        duckdb_path=database,
        models_dir=os.path.dirname(database),
    )
    return {"io_manager": MadefDuckDBIOManager(database=database), "labeler": labeler}


defs = Definitions(assets=[llm_answers], resources=resources_from_env(), executor=in_process_executor)
