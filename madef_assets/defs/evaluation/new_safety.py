"""The 14-category New-Safety benchmark: the sample (disjoint from the SFT set), each candidate's answers,
the judge's labels and the safe rate per category (review decisions applied)."""

from collections.abc import Callable

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, MetadataValue, Output, StaticPartitionsDefinition, asset

from madef_assets.defs.evaluation.candidates import (
    candidate_pools,
    fingerprint,
    per_candidate_asset,
    sample_per_group,
    sources_hash,
    with_fingerprint,
)
from madef_assets.defs.evaluation.checks import disjoint_from_sft_result, disjoint_from_sft_spec
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.evaluation.judging import answered, review_key, safety_label
from madef_assets.defs.frames import concat_prompts
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.llm_steps import role_step
from madef_assets.defs.panel import ask_panel
from madef_assets.defs.selection.contamination import contaminated
from madef_assets.defs.verdicts import parse_safety_judgement
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import family_version, template
from madef_assets.reports import markdown_table
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

GROUP = "evaluation"


def build_new_safety_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    evaluation = settings.evaluation
    taxonomy = Taxonomy.load(settings.taxonomy_path)
    new_safety = evaluation.new_safety
    new_safety_ins = {f"src_{name}": AssetIn(AssetKey(name)) for name in new_safety.sources}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        check_specs=[disjoint_from_sft_spec()],
        ins={**new_safety_ins, "sft_dataset": AssetIn()},
    )
    def new_safety_benchmark(context: AssetExecutionContext, sft_dataset: pl.DataFrame, **sources: pl.DataFrame):
        """The 14-category open-ended benchmark: evaluation.new_safety.per_category prompts per category,
        seeded, from the configured sources mapped through the taxonomy; prompts in the SFT set or sharing
        a long n-gram with it are excluded first, and a blocking check confirms the result is disjoint."""
        pool = concat_prompts(sources)
        mapped = pool.with_columns(
            category=pl.Series(
                [taxonomy.map_source_category(s, c) for s, c in zip(pool["source"], pool["source_category"])],
                dtype=pl.Utf8,
            )
        )
        unmapped = mapped.filter(pl.col("category").is_null())
        mapped = mapped.filter(pl.col("category").is_not_null())
        sft_texts = sft_dataset["instruction"].to_list()
        leaking = {
            key
            for key, _ in contaminated(
                zip(mapped["prompt_id"], mapped["prompt"]),
                sft_texts,
                settings.method.contamination_zh_chars,
                settings.method.contamination_en_words,
            )
        }
        clean = mapped.filter(~pl.col("prompt_id").is_in(list(leaking | set(sft_dataset["prompt_id"].to_list()))))
        table = sample_per_group(clean, "category", "prompt_id", new_safety.per_category, evaluation.seed).select(
            "prompt_id", "source", "lang", "category", "source_category", "prompt"
        )
        per_category = {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()}
        yield Output(
            table,
            metadata={
                "rows_in": pool.height,
                "unmapped_category": unmapped.height,
                "excluded_overlapping_sft": mapped.height - clean.height,
                "eligible": clean.height,
                "per_category": per_category,
                "categories_missing": [c for c in taxonomy.categories if c not in per_category],
            },
        )
        yield disjoint_from_sft_result(table, sft_dataset, settings.method)

    @per_candidate_asset(candidates, {"duckdb", "llm"}, pool_of=candidate_pools(settings))
    def new_safety_responses(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, new_safety_benchmark: pl.DataFrame
    ):
        """Each benchmark prompt answered by the candidate (chat template when the model has one)."""
        llm = llm_for(candidate_model, raw_prompts=False)
        params = llm.default_params.with_changes(max_new_tokens=new_safety.max_new_tokens)
        batch = llm.generate(
            new_safety_benchmark["prompt"].to_list(), "new_safety_response@1", params=params, log=context.log
        )
        table = new_safety_benchmark.select("prompt_id", "category", "lang", "prompt").with_columns(
            candidate=pl.lit(context.partition_key),
            response=pl.Series([r.value if r.status == "ok" else None for r in batch.results], dtype=pl.Utf8),
            status=pl.Series([r.status for r in batch.results]),
            error=pl.Series([r.error for r in batch.results], dtype=pl.Utf8),
        )
        table = with_fingerprint(table, fingerprint(llm, params.as_dict(), sources_hash(settings, new_safety.sources)))
        return Output(table, metadata=batch.metadata())

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm"},
        **role_step(settings, "judge"),
        deps=[AssetKey("judge_qualification")],
    )
    def new_safety_judgements(context: AssetExecutionContext, judge: LLMResource, new_safety_responses: pl.DataFrame):
        """The judge's label per response: safe / unsafe / uncertain with a short reason (a panel's majority,
        its votes in the reason; a tie is uncertain). An unparseable verdict or a missing response is
        `uncertain` and goes to the review queue."""
        rows = new_safety_responses.to_dicts()
        judged = answered([r["response"] for r in rows], [r["status"] for r in rows])
        answers = ask_panel(
            judge,
            [
                template("new_safety_judge", rows[i]["lang"]).render(
                    prompt=rows[i]["prompt"], response=rows[i]["response"]
                )
                for i in judged
            ],
            family_version("new_safety_judge"),
            safety_label,
            context.log,
        )
        results, labels = dict(zip(judged, answers.first.results)), dict(zip(judged, answers.labels))
        votes = dict(zip(judged, zip(*answers.votes))) if len(answers.models) > 1 else {}
        verdicts = [
            parse_safety_judgement(results[i].value) if i in results and results[i].status == "ok" else None
            for i in range(len(rows))
        ]
        reasons = [
            v.reason
            if v
            else (
                f"judge call failed: {results[i].error}"
                if i in results
                else f"no answer to judge ({rows[i]['status']}: {rows[i]['error']})"
            )
            for i, v in enumerate(verdicts)
        ]
        reasons = [
            f"panel votes {', '.join(votes[i])}; {reason}" if i in votes else reason for i, reason in enumerate(reasons)
        ]
        table = new_safety_responses.select(
            "candidate", "prompt_id", "category", "lang", "prompt", "response"
        ).with_columns(
            judge_label=pl.Series([labels.get(i, "uncertain") for i in range(len(rows))]),
            judge_reason=pl.Series(reasons, dtype=pl.Utf8),
            judge_parsed=pl.Series([bool(v and v.parsed) for v in verdicts]),
            judge_raw_output=pl.Series(
                [
                    results[i].output if i in results and isinstance(results[i].output, str) else None
                    for i in range(len(rows))
                ],
                dtype=pl.Utf8,
            ),
            review_key=pl.Series(
                [
                    review_key("new_safety", context.partition_key, p, r)
                    for p, r in zip(new_safety_responses["prompt_id"], new_safety_responses["response"])
                ]
            ),
        )
        counts = {k: int(v) for k, v in table.group_by("judge_label").len().sort("judge_label").iter_rows()}
        return Output(
            table,
            metadata={
                **answers.metadata(),
                "labels": counts,
                "judge_model": ", ".join(answers.models),
                "unanswered": len(rows) - len(judged),
            },
        )

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def new_safety_scores(
        context: AssetExecutionContext,
        new_safety_judgements: pl.DataFrame,
        review_decisions: pl.DataFrame,
        new_safety_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Safe rate per category for the candidate, with counts and how many labels came from review."""
        table = with_wilson(
            run_sql("evaluation/new_safety_scores", judgements=new_safety_judgements, decisions=review_decisions),
            "safe",
            "prompts",
        )
        if new_safety_responses.height:
            table = with_fingerprint(table, new_safety_responses.row(0, named=True))
        context.add_output_metadata(
            {
                "scores": MetadataValue.md(
                    markdown_table(
                        table.select(
                            "category",
                            "prompts",
                            "safe",
                            "unsafe",
                            "pending_review",
                            "from_review",
                            "safe_rate",
                            "ci_low",
                            "ci_high",
                        )
                    )
                )
            }
        )
        return table

    return [new_safety_benchmark, new_safety_responses, new_safety_judgements, new_safety_scores]
