"""The model each candidate partition evaluates (`candidate_model`)."""

import json

import polars as pl
from dagster import AssetDep, AssetExecutionContext, StaticPartitionMapping, StaticPartitionsDefinition

from madef_assets.defs.evaluation.candidates import (
    CANDIDATE_SCHEMA,
    candidate_llm,
    fingerprint,
    per_candidate_asset,
    rate_partition_mapping,
    read_checkpoints,
    resolve_candidate,
)
from madef_assets.settings import Settings


def candidate_model_row(candidate, checkpoints) -> dict:
    row = resolve_candidate(candidate, checkpoints)
    return {**row, "options": json.dumps(row["options"], sort_keys=True)}


def build_candidate_assets(settings: Settings, candidates: StaticPartitionsDefinition) -> list:
    evaluation = settings.evaluation
    by_name = {c.name: c for c in evaluation.candidates}

    # Trained at several rates (§5.1.1): each tuned candidate depends on its rate's partition only.
    rate_mapping = (
        StaticPartitionMapping(rate_partition_mapping(evaluation.candidates)) if settings.training.partitioned else None
    )

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        deps=["base_model_checkpoint", AssetDep("finetuned_checkpoint", partition_mapping=rate_mapping)],
    )
    def candidate_model(context: AssetExecutionContext) -> pl.DataFrame:
        """The model this partition evaluates: backend, model path or served name, its hash and whether its
        chat template is used (a checkpoint candidate reads the path from that checkpoint asset, a tuned one
        trained at several rates from its rate's partition)."""
        candidate = by_name[context.partition_key]
        row = candidate_model_row(candidate, read_checkpoints(settings, candidate.rate))
        llm = candidate_llm(settings, row, raw_prompts=False)
        identity = fingerprint(llm, {}, "")
        table = pl.DataFrame(
            [{**row, "model_hash": identity["model_hash"], "chat_template": identity["chat_template"]}],
            schema=CANDIDATE_SCHEMA,
        )
        context.add_output_metadata(
            {"model": row["model"], "backend": row["backend"], "model_hash": table["model_hash"][0]}
        )
        return table

    return [candidate_model]
