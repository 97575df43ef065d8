"""General capability per candidate: gsm8k, MMLU / CMMLU / C-Eval and HumanEval predictions and scores."""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import polars as pl
from dagster import AssetExecutionContext, Failure, MetadataValue, Output, StaticPartitionsDefinition

from madef_assets.defs.evaluation import general, sandbox
from madef_assets.defs.evaluation.candidates import (
    FINGERPRINT_COLUMNS,
    candidate_pools,
    files_hash,
    fingerprint,
    per_candidate_asset,
    with_fingerprint,
)
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.sources import benchmark_files
from madef_assets.llm.resource import LLMResource
from madef_assets.reports import markdown_table
from madef_assets.settings import Gsm8kConfig, HumanEvalConfig, McqConfig, Settings
from madef_assets.storage import run_sql


def build_general_assets(
    settings: Settings, candidates: StaticPartitionsDefinition, llm_for: Callable[[pl.DataFrame, bool], LLMResource]
) -> list:
    general_config = settings.evaluation.general
    data_dir = general_config.data_dir

    @per_candidate_asset(candidates, {"duckdb", "llm"}, pool_of=candidate_pools(settings))
    def general_capability_predictions(context: AssetExecutionContext, candidate_model: pl.DataFrame) -> Output:
        """gsm8k (few-shot chain of thought, final number exact match), MMLU / CMMLU / C-Eval val (k-shot,
        option log-probabilities) and HumanEval (pass@1, each program run in the profile's sandbox — bubblewrap
        isolation by default — with a time and memory limit, never in this process), on the raw prompt as
        lm-evaluation-harness does."""
        llm = llm_for(candidate_model, raw_prompts=True)
        tables, metadata = [], {}
        for benchmark in ("gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"):
            spec = getattr(general_config, benchmark)
            if spec is None:
                continue
            run = {"gsm8k": predict_gsm8k, "humaneval": predict_humaneval}.get(benchmark, predict_mcq)
            table, batch, params, files = run(context, llm, benchmark, spec)
            table = with_fingerprint(
                table.with_columns(candidate=pl.lit(context.partition_key), benchmark=pl.lit(benchmark)),
                fingerprint(llm, params, files_hash(files)),
            )
            tables.append(table)
            metadata[f"{benchmark}_questions"] = table.height
            metadata[f"{benchmark}_score"] = round(100 * float(table["correct"].mean() or 0.0), 2)
            metadata[f"{benchmark}_llm_backend_calls"] = batch.backend_calls
        columns = [
            "candidate",
            "benchmark",
            "subject",
            "item_id",
            "prediction",
            "reference",
            "correct",
            "detail",
            "status",
            *FINGERPRINT_COLUMNS,
        ]
        return Output(pl.concat([t.select(columns) for t in tables], how="vertical_relaxed"), metadata=metadata)

    def predict_gsm8k(context, llm: LLMResource, benchmark: str, spec: Gsm8kConfig):
        path, shots_count = data_dir / spec.file, spec.shots
        items = benchmark_files.load_gsm8k(path, limit=spec.limit)
        params = llm.default_params.with_changes(max_new_tokens=spec.max_new_tokens, stop=general.GSM8K_STOP)
        prompts = general.gsm8k_prompts(items, general.load_gsm8k_exemplars(), shots_count)
        batch = llm.generate(prompts, "gsm8k@1", params=params, log=context.log)
        predictions = [general.extract_gsm8k_answer(r.value) if r.status == "ok" else None for r in batch.results]
        table = pl.DataFrame(
            {
                "subject": "gsm8k",
                "item_id": [i.item_id for i in items],
                "prediction": predictions,
                "reference": [i.answer for i in items],
                "correct": [p is not None and p == i.answer for p, i in zip(predictions, items)],
                "detail": [r.output if isinstance(r.output, str) else None for r in batch.results],
                "status": [r.status for r in batch.results],
            },
            schema_overrides={"prediction": pl.Utf8, "detail": pl.Utf8},
        )
        return table, batch, {**params.as_dict(), "shots": shots_count}, [path, general.GSM8K_COT_EXEMPLARS]

    def predict_mcq(context, llm: LLMResource, benchmark: str, spec: McqConfig):
        zip_path, mapping = data_dir / spec.zip, data_dir / spec.mapping
        split = "val" if benchmark == "ceval" else "test"
        items = benchmark_files.load_mcq_benchmark(
            benchmark, zip_path, mapping, split, limit_per_subject=spec.per_subject
        )
        dev = benchmark_files.load_mcq_benchmark(benchmark, zip_path, mapping, "dev")
        shots_count = spec.shots
        dev_by_subject: dict[str, list] = {}
        for item in dev:
            dev_by_subject.setdefault(item.subject, []).append(item)
        continuations = general.mcq_continuations(benchmark)
        prompts = [
            general.render_mcq_prompt(item, dev_by_subject.get(item.subject, [])[:shots_count]) for item in items
        ]
        batch = llm.option_logprobs(prompts, continuations, f"{benchmark}@{shots_count}shot", log=context.log)
        predictions = [
            general.pick_mcq_answer(r.value, continuations) if r.status == "ok" else None for r in batch.results
        ]
        table = pl.DataFrame(
            {
                "subject": [i.subject for i in items],
                "item_id": [i.item_id for i in items],
                "prediction": predictions,
                "reference": [i.answer for i in items],
                "correct": [p is not None and p == i.answer for p, i in zip(predictions, items)],
                "detail": [json.dumps(r.value) if r.status == "ok" else r.error for r in batch.results],
                "status": [r.status for r in batch.results],
            },
            schema_overrides={"prediction": pl.Utf8, "detail": pl.Utf8},
        )
        return table, batch, {"options": list(continuations), "shots": shots_count}, [zip_path, mapping]

    def predict_humaneval(context, llm: LLMResource, benchmark: str, spec: HumanEvalConfig):
        isolation = settings.sandbox.isolation
        problem = sandbox.isolation_problem(isolation)
        if problem:
            raise Failure(description=f"HumanEval not run: {problem}")
        path = data_dir / spec.file
        items = benchmark_files.load_humaneval(path, limit=spec.limit)
        params = llm.default_params.with_changes(max_new_tokens=spec.max_new_tokens, stop=general.HUMANEVAL_STOP)
        batch = llm.generate([item.prompt for item in items], "humaneval@1", params=params, log=context.log)
        completions = [r.value if r.status == "ok" else "" for r in batch.results]
        programs = [general.humaneval_program(item, completion) for item, completion in zip(items, completions)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(
                pool.map(
                    lambda program, item: sandbox.run_in_sandbox(
                        program,
                        spec.timeout_s,
                        spec.memory_mb,
                        isolation,
                        entry_point=general.humaneval_entry_point(item),
                    ),
                    programs,
                    items,
                )
            )
        table = pl.DataFrame(
            {
                "subject": "humaneval",
                "item_id": [i.task_id for i in items],
                "prediction": [general.truncate_completion(c) for c in completions],
                "reference": None,
                "correct": [r.passed for r in results],
                "detail": [f"{r.status} in {r.seconds:.2f}s: {r.stderr_tail[-300:]}" for r in results],
                "status": [r.status for r in batch.results],
            },
            schema_overrides={"reference": pl.Utf8, "prediction": pl.Utf8},
        )
        return (
            table,
            batch,
            {
                **params.as_dict(),
                "timeout_s": spec.timeout_s,
                "memory_mb": spec.memory_mb,
                "isolation": isolation,
            },
            [path],
        )

    @per_candidate_asset(candidates, {"duckdb", "sql"})
    def general_capability_scores(
        context: AssetExecutionContext, general_capability_predictions: pl.DataFrame
    ) -> pl.DataFrame:
        """Accuracy per benchmark and subject (pass@1 for HumanEval), and per benchmark over all questions."""
        table = with_wilson(
            run_sql("evaluation/general_capability_scores", predictions=general_capability_predictions),
            "correct",
            "questions",
        )
        context.add_output_metadata(
            {
                "scores": MetadataValue.md(
                    markdown_table(
                        table.filter(pl.col("subject") == "(all)").select(
                            "benchmark", "questions", "score", "ci_low", "ci_high"
                        )
                    )
                )
            }
        )
        return table

    return [general_capability_predictions, general_capability_scores]
