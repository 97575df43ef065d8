"""Source assets: one observable file asset and one normalized table per configured dataset,
its quarantine table, the union of all quarantine rows, and a per-source summary."""

import hashlib
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    DataVersion,
    MetadataValue,
    ObserveResult,
    Output,
    SourceAsset,
    asset,
    multi_asset,
    observable_source_asset,
)

from madef_assets.defs.sources.checks import ingestion_check_specs, quarantine_share_result, row_balance_result
from madef_assets.defs.sources.normalize import QUARANTINE_SCHEMA, NormalizedSource, normalize_source
from madef_assets.defs.sources.records import DataFile, list_files, open_regular
from madef_assets.reports import markdown_table
from madef_assets.settings import Settings, SourceConfig
from madef_assets.storage import run_sql

GROUP = "sources"


def raw_key(name: str) -> AssetKey:
    return AssetKey(["raw", name])


def quarantine_key(name: str) -> AssetKey:
    return AssetKey(["quarantine", name])


def source_input_files(source: SourceConfig) -> list[Path]:
    """Every file a source reads (folders expanded, answer files included), sorted. In a folder, what the
    readers refuse (a symbolic link out of it, a device, a FIFO) is left out: it is never opened."""
    paths: list[Path] = []
    for file in source.files:
        listed = list_files(DataFile(file.path, file.config_key, source.max_file_bytes), "*", recursive=True)
        paths += [item.path for item in listed if isinstance(item, DataFile)]
        if file.answers is not None:
            answers = DataFile(file.answers, f"{file.config_key}.answers", source.max_file_bytes)
            paths += [answers.path for _ in list_files(answers, "*")]
    return paths


def content_version(paths: list[Path]) -> str:
    """sha256 over file names and bytes, read in chunks: changes when any input file's content changes. A
    path that is not a regular file (a device never ends, a FIFO blocks) is refused, naming it."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open_regular(path, "input file") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def build_raw_files_asset(source: SourceConfig) -> SourceAsset:
    @observable_source_asset(
        key=raw_key(source.name),
        group_name=GROUP,
        description=f"The input files of source '{source.name}' ({source.description or source.reader}). "
        "Observed by content hash: the data version changes whenever a file's bytes do.",
    )
    def raw_files() -> ObserveResult:
        paths = source_input_files(source)
        return ObserveResult(
            data_version=DataVersion(content_version(paths)),
            metadata={
                "files": MetadataValue.json([str(p) for p in paths]),
                "bytes": sum(p.stat().st_size for p in paths),
            },
        )

    return raw_files


def ingest_counts(result: NormalizedSource) -> dict:
    """Rows in, normalized, quarantined and merged (preference pairs of a prompt already kept)."""
    return {
        "rows_in": result.rows_in,
        "rows_normalized": result.prompts.height,
        "rows_quarantined": result.quarantine.height,
        "rows_merged": result.rows_merged,
        "quarantine_share": round(result.quarantine_share, 4),
    }


def source_summary_table(sources: dict[str, pl.DataFrame], quarantine: pl.DataFrame) -> pl.DataFrame:
    """Per source: rows in = normalized + quarantined + merged (counted from each kept row's meta)."""
    columns = ["source", "lang", "source_category", "attack_method", "response"]
    merged = pl.col("meta").str.json_path_match("$.merged_rows").cast(pl.Int64).fill_null(0).alias("merged_rows")
    prompts = pl.concat([frame.select(*columns, merged) for frame in sources.values()], how="vertical_relaxed")
    return run_sql("sources/source_summary", prompts=prompts, quarantine=quarantine)


def build_ingest_asset(source: SourceConfig, settings: Settings) -> AssetsDefinition:
    source_key = AssetKey(source.name)

    @multi_asset(
        name=f"ingest_{source.name}",
        outs={
            "prompts": AssetOut(
                key=source_key,
                group_name=GROUP,
                kinds={"duckdb", "polars"},
                description=f"Source '{source.name}' ({source.reader} reader) in the normalized prompt schema: "
                "prompt_id, source, lang, prompt, response, source_category, attack_method, meta (JSON).",
            ),
            "quarantine": AssetOut(
                key=quarantine_key(source.name),
                group_name=GROUP,
                kinds={"duckdb", "polars"},
                description=f"Input rows of '{source.name}' that were not normalized, with location "
                "(file:line) and reason "
                "(preference pairs merged into their prompt's kept row are counted as rows_merged, not here).",
            ),
        },
        deps=[raw_key(source.name)],
        check_specs=ingestion_check_specs(source_key),
    )
    def ingest(context: AssetExecutionContext):
        result = normalize_source(source, settings.max_prompt_chars)
        counts = ingest_counts(result)
        context.log.info(f"{source.name}: {counts}")
        yield Output(
            result.prompts,
            output_name="prompts",
            metadata={
                **counts,
                "rows_by_lang": {str(k): int(v) for k, v in result.prompts["lang"].value_counts().iter_rows()},
                "categories": result.prompts["source_category"].n_unique(),
            },
        )
        yield Output(result.quarantine, output_name="quarantine", metadata=counts)
        yield quarantine_share_result(source_key, result, settings.max_quarantine_share)
        yield row_balance_result(source_key, result)

    return ingest


def build_union_assets(settings: Settings) -> list[AssetsDefinition]:
    names = sorted(settings.sources)

    @asset(
        name="quarantine",
        group_name=GROUP,
        kinds={"duckdb", "polars"},
        ins={f"q_{n}": AssetIn(quarantine_key(n)) for n in names},
    )
    def quarantine(context: AssetExecutionContext, **per_source: pl.DataFrame) -> pl.DataFrame:
        """Every quarantined input row of every source: source, location (file:line), reason, raw excerpt."""
        frames = [f for f in per_source.values() if f.width] or [pl.DataFrame(schema=QUARANTINE_SCHEMA)]
        combined = pl.concat(frames, how="diagonal_relaxed").sort(["source", "location"])
        context.add_output_metadata({"rows_by_source": {n: per_source[f"q_{n}"].height for n in names}})
        return combined

    @asset(
        name="source_summary",
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        ins={**{f"s_{n}": AssetIn(AssetKey(n)) for n in names}, "quarantine": AssetIn(AssetKey("quarantine"))},
    )
    def source_summary(
        context: AssetExecutionContext, quarantine: pl.DataFrame, **sources: pl.DataFrame
    ) -> pl.DataFrame:
        """Rows read, normalized, quarantined and merged per source (dbt_like_sql/sources/source_summary.sql);
        rows_in = normalized + quarantined + merged."""
        summary = source_summary_table(sources, quarantine)
        context.add_output_metadata(
            {
                "summary": MetadataValue.md(markdown_table(summary)),
                "rows_in_total": int(summary["rows_in"].sum()),
                "rows_quarantined_total": int(summary["rows_quarantined"].sum()),
                "rows_merged_total": int(summary["rows_merged"].sum()),
            }
        )
        return summary

    return [quarantine, source_summary]


def build_source_defs(settings: Settings) -> tuple[list, list]:
    """(observable source assets, materializable assets) for the configured sources."""
    raw = [build_raw_files_asset(s) for s in settings.sources.values()]
    ingests = [build_ingest_asset(s, settings) for s in settings.sources.values()]
    return raw, ingests + build_union_assets(settings)
