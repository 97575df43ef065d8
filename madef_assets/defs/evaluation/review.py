"""Human review: the per-candidate queue of answers a human must decide and the reviewers' decisions."""

from collections.abc import Sequence

import polars as pl
from dagster import AssetExecutionContext, AssetIn, MetadataValue, StaticPartitionsDefinition, asset

from madef_assets.defs.evaluation.benchmark import Benchmark, queue_rows
from madef_assets.defs.evaluation.candidates import per_candidate_asset
from madef_assets.review.decisions import latest_decisions, write_jsonl_atomically
from madef_assets.settings import Settings

GROUP = "evaluation"


def build_review_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, benchmarks: Sequence[Benchmark]
) -> list:
    review_dir = settings.evaluation.review_dir
    decisions_file = review_dir / "decisions.jsonl"
    sources = [source for spec in benchmarks for source in spec.review]

    @per_candidate_asset(candidates, {"duckdb", "json"}, ins={source.asset: AssetIn() for source in sources})
    def review_queue(context: AssetExecutionContext, **judged: pl.DataFrame) -> pl.DataFrame:
        """What a human must decide for this candidate, each registered benchmark's share (New-Safety responses
        the judge was uncertain about, MCQ answers that need a check, XSTest answers where the judge and the
        string matcher disagree, ...). Written to <review_dir>/queue/<candidate>.jsonl for the review page
        (`madef review`); decisions go to decisions.jsonl, which no asset ever rewrites."""
        table = queue_rows([source.select(judged[source.asset]) for source in sources])
        path = review_dir / "queue" / f"{context.partition_key}.jsonl"
        write_jsonl_atomically(path, table.iter_rows(named=True))
        context.add_output_metadata(
            {"queue_file": MetadataValue.path(str(path)), "decisions_file": MetadataValue.path(str(decisions_file))}
        )
        return table

    @asset(group_name=GROUP, kinds={"duckdb", "json"})
    def review_decisions(context: AssetExecutionContext) -> pl.DataFrame:
        """The reviewers' decisions from <review_dir>/decisions.jsonl (append-only; the latest decision per
        review_key wins). Malformed lines are listed in the metadata, never dropped silently."""
        latest, problems = latest_decisions(decisions_file)
        table = pl.DataFrame(
            list(latest.values()),
            schema={
                "review_key": pl.Utf8,
                "decision": pl.Utf8,
                "reviewer": pl.Utf8,
                "note": pl.Utf8,
                "decided_at": pl.Utf8,
            },
        )
        context.add_output_metadata(
            {
                "decisions_file": MetadataValue.path(str(decisions_file)),
                "malformed_lines": len(problems),
                "problems": problems[:20],
            }
        )
        return table

    return [review_queue, review_decisions]
