"""SafetyBench per candidate: predictions in each configured answer mode and the official scores."""

import json
from collections.abc import Callable

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, MetadataValue, Output, StaticPartitionsDefinition

from madef_assets.defs.evaluation import safetybench
from madef_assets.defs.evaluation.candidates import (
    FINGERPRINT_COLUMNS,
    candidate_pools,
    fingerprint,
    per_candidate_asset,
    sample_per_group,
    sources_hash,
    with_fingerprint,
)
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.llm.resource import LLMResource
from madef_assets.reports import markdown_table
from madef_assets.settings import Settings

# SafetyBench prompts are rendered in code (the official format), so their ledger version is a constant.
SAFETYBENCH_PROMPT_VERSION = "safetybench-official@1"


def build_safetybench_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    evaluation = settings.evaluation
    report_dir = evaluation.report_dir
    bench = evaluation.safetybench
    bench_sources = bench.sources

    @per_candidate_asset(
        candidates,
        {"duckdb", "llm", "json"},
        pool_of=candidate_pools(settings),
        ins={"candidate_model": AssetIn(), **{f"bench_{name}": AssetIn(AssetKey(name)) for name in bench_sources}},
    )
    def safetybench_predictions(context: AssetExecutionContext, candidate_model: pl.DataFrame, **items: pl.DataFrame):
        """SafetyBench answers of one candidate in each configured mode, over every configured source (one per
        language: zh and en question ids overlap; five-shot with each language's own dev file): `logprobs`
        (next-token scores of A-D after `答案：(`, restricted to the question's options, on the raw prompt) and
        `generate` (the answer read from the chat output by the official rules, else a seeded random option,
        counted in the metadata: safetybench.generate_predictions). Writes the official submission JSON per
        source and mode (`<source>_<mode>_submission.json`) to the report folder."""
        candidate = context.partition_key
        combined = pl.concat([items[f"bench_{name}"] for name in bench_sources], how="vertical_relaxed")
        questions = sample_per_group(
            combined.with_columns(
                category=pl.col("source_category"),
                bench_group=pl.concat_str("source", "source_category", separator="/"),
            ),
            "bench_group",
            "prompt_id",
            bench.per_category,
            evaluation.seed,
        ).drop("bench_group")
        # in the configured order of the sources (zh before en in the paper's tables)
        questions = questions.sort(
            pl.col("source").replace_strict({n: i for i, n in enumerate(bench_sources)}), maintain_order=True
        )
        shots = safetybench.dev_shots_by_lang(bench.dev_file, questions["lang"].unique(maintain_order=True).to_list())
        metas = [json.loads(m) for m in questions["meta"]]
        prompts = [
            safetybench.render_prompt(m["question"], m["options"], lang, shots[lang].get(c, [])[:5])
            for m, lang, c in zip(metas, questions["lang"], questions["category"])
        ]
        dataset_hash = sources_hash(settings, bench_sources)
        tables, metadata = [], {}
        for mode in bench.answer_modes:
            if mode == "logprobs":
                llm = llm_for(candidate_model, raw_prompts=True)
                batch = llm.option_logprobs(
                    [p + "(" for p in prompts], safetybench.LETTERS, SAFETYBENCH_PROMPT_VERSION, log=context.log
                )
                letters = [
                    safetybench.pick_option(r.value, len(m["options"])) if r.status == "ok" else None
                    for r, m in zip(batch.results, metas)
                ]
                answers = [(safetybench.LETTERS.index(x) if x else None, None) for x in letters]
                params = {"mode": mode, "options": list(safetybench.LETTERS)}
            else:
                llm = llm_for(candidate_model, raw_prompts=False)
                gen = llm.default_params.with_changes(max_new_tokens=bench.max_new_tokens, stop=())
                batch = llm.generate(prompts, SAFETYBENCH_PROMPT_VERSION, params=gen, log=context.log)
                outputs = [r.value if r.status == "ok" else None for r in batch.results]
                answers = safetybench.generate_predictions(
                    outputs, [m["options"] for m in metas], questions["source"].to_list(), [m["id"] for m in metas]
                )
                params = {"mode": mode, **gen.as_dict(), "random_guess_seed": safetybench.OFFICIAL_SEED}
            predicted, extraction = [index for index, _ in answers], [rule for _, rule in answers]
            table = pl.DataFrame(
                {
                    "candidate": candidate,
                    "mode": mode,
                    "source": questions["source"],
                    "lang": questions["lang"],
                    "id": [str(m["id"]) for m in metas],
                    "category": questions["category"],
                    "abbreviation": [safetybench.CATEGORY_ABBREVIATIONS.get(c, c) for c in questions["category"]],
                    "answer_index": [m["answer"] for m in metas],
                    "predicted_index": predicted,
                    "extraction": extraction,
                    "raw_output": [
                        r.output if isinstance(r.output, str) else json.dumps(r.output) for r in batch.results
                    ],
                    "status": [r.status for r in batch.results],
                },
                schema_overrides={
                    "answer_index": pl.Int64,
                    "predicted_index": pl.Int64,
                    "extraction": pl.Utf8,
                    "raw_output": pl.Utf8,
                },
            )
            table = table.with_columns(correct=(pl.col("predicted_index") == pl.col("answer_index")).fill_null(False))
            tables.append(with_fingerprint(table, fingerprint(llm, params, dataset_hash)))
            for (name,), rows in table.group_by("source", maintain_order=True):
                path = report_dir / candidate / f"{name}_{mode}_submission.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(safetybench.submission(rows), indent=1), encoding="utf-8")
                metadata[f"{mode}_submission_{name}"] = MetadataValue.path(str(path))
            for (lang,), rows in table.group_by("lang", maintain_order=True):
                metadata[f"{mode}_accuracy_{lang}"] = round(float(rows["correct"].mean() or 0.0) * 100, 2)
            missing = table.filter(pl.col("predicted_index").is_null())
            metadata[f"{mode}_accuracy"] = round(float(table["correct"].mean() or 0.0) * 100, 2)
            metadata[f"{mode}_unanswered"] = missing.height
            metadata[f"{mode}_unanswered_ids"] = [
                f"{s}:{i}" for s, i in missing.select("source", "id").head(50).iter_rows()
            ]
            guessed = table.filter(pl.col("extraction") == "random")
            metadata[f"{mode}_random_guesses"] = guessed.height
            metadata[f"{mode}_random_guess_ids"] = [
                f"{s}:{i}" for s, i in guessed.select("source", "id").head(50).iter_rows()
            ]
            metadata[f"{mode}_llm_backend_calls"] = batch.backend_calls
        return Output(pl.concat(tables), metadata={"questions": questions.height, **metadata})

    @per_candidate_asset(candidates, {"duckdb", "polars"})
    def safetybench_scores(context: AssetExecutionContext, safetybench_predictions: pl.DataFrame) -> pl.DataFrame:
        """SafetyBench's own formula per mode and language (zh and en are scored apart, as published): per
        category correct / all evaluated questions of it (a missing prediction is wrong), Avg = all correct /
        all questions, x100 (OFF UB PH MH IA EM PP Avg); one row per mode, lang and category."""
        rows = [
            {"candidate": context.partition_key, **row, "score": round(row["score"], 2)}
            for row in safetybench.language_scores(safetybench_predictions)
        ]
        table = with_wilson(pl.DataFrame(rows), "correct", "questions").join(
            safetybench_predictions.select("mode", *FINGERPRINT_COLUMNS).unique("mode"), on="mode", how="left"
        )
        context.add_output_metadata(
            {
                "scores": MetadataValue.md(
                    markdown_table(
                        table.pivot(on="mode", index=["lang", "category"], values="score", maintain_order=True)
                    )
                )
            }
        )
        return table

    return [safetybench_predictions, safetybench_scores]
