"""Selection and export: the paper's three-feature selection, the general sample, the SFT set."""

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, MetadataValue, Output, asset

from madef_assets.defs.frames import concat_prompts, params_view
from madef_assets.defs.selection.checks import contamination_result, contamination_spec
from madef_assets.defs.selection.export import write_llamafactory_dataset
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

GROUP = "selection"
POOL = "duckdb"


def build_selection_assets(settings: Settings) -> list:
    method = settings.method
    selection = method.selection

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL)
    def safety_sft_selected(context: AssetExecutionContext, reward_features: pl.DataFrame) -> pl.DataFrame:
        """Samples with low prompt perplexity, a safe chosen response and a hard instruction, capped per
        category (dbt_like_sql/selection/safety_sft_selected.sql; thresholds in method.selection)."""
        params = params_view(perplexity_quantile=selection.perplexity_quantile, min_response_safety=selection.min_response_safety,
                             max_instruction_safety=selection.max_instruction_safety, per_category_cap=selection.per_category_cap)
        table = run_sql("selection/safety_sft_selected", reward_features=reward_features, params=params)
        context.add_output_metadata({"rows_in": reward_features.height, "thresholds": MetadataValue.json(params.to_dicts()[0]),
                                     "per_category": {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()}})
        return table

    general_ins = {f"src_{name}": AssetIn(AssetKey(name)) for name in method.general_sources}

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, ins=general_ins, pool=POOL)
    def general_sft_sample(context: AssetExecutionContext, **sources: pl.DataFrame) -> pl.DataFrame:
        """General instruction data sampled to method.general_sample_size, stratified by source."""
        table = run_sql("selection/general_sft_sample", general=concat_prompts(sources),
                        params=params_view(sample_size=method.general_sample_size, seed=method.seed))
        context.add_output_metadata({"per_source": {k: int(v) for k, v in table.group_by("source").len().sort("source").iter_rows()}})
        return table

    eval_ins = {f"eval_{name}": AssetIn(AssetKey(name)) for name in method.eval_sources}

    @asset(group_name=GROUP, kinds={"duckdb", "sql", "json"}, pool=POOL, check_specs=[contamination_spec()],
           ins={"safety_sft_selected": AssetIn(), "general_sft_sample": AssetIn(), **eval_ins})
    def sft_dataset(context: AssetExecutionContext, safety_sft_selected: pl.DataFrame, general_sft_sample: pl.DataFrame, **eval_sources: pl.DataFrame):
        """The SFT set (selected safety samples + general sample) as a table and as a LLaMA-Factory dataset
        folder (alpaca JSON, sharegpt when configured, dataset_info.json); gated by the contamination check."""
        table = run_sql("selection/sft_dataset", safety_sft_selected=safety_sft_selected, general_sft_sample=general_sft_sample)
        files = write_llamafactory_dataset(table.select("instruction", "input", "output").to_dicts(), method.sft_export_dir, method.sft_formats)
        yield Output(table, metadata={
            "dataset_dir": MetadataValue.path(str(method.sft_export_dir)),
            "files": MetadataValue.json({k: str(v) for k, v in files.items()}),
            "per_kind": {k: int(v) for k, v in table.group_by("kind").len().sort("kind").iter_rows()},
            "per_category": {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()},
        })
        yield contamination_result(table, concat_prompts(eval_sources)["prompt"], method)

    return [safety_sft_selected, general_sft_sample, sft_dataset]
