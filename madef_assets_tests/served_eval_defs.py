"""A code location for test_pools: the madef definitions of $MADEF_PROFILE and two small jobs over them,
SafetyBench's source and each candidate's SafetyBench answers, so `madef run`'s launcher runs real
evaluation steps without the whole build."""

from dagster import AssetSelection, Definitions, define_asset_job

from madef_assets.definitions import build_definitions
from madef_assets.settings import current_settings

INGEST_JOB, EVALUATE_JOB = "load_safetybench_source", "answer_safetybench"

defs = Definitions.merge(
    build_definitions(current_settings()),
    Definitions(
        jobs=[
            define_asset_job(INGEST_JOB, AssetSelection.assets("safetybench").required_multi_asset_neighbors()),
            define_asset_job(EVALUATE_JOB, AssetSelection.assets("candidate_model", "safetybench_predictions")),
        ]
    ),
)
