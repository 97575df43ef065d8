"""Evaluation: every candidate (base, tuned, any configured model) on SafetyBench, the 14-category
New-Safety benchmark (LLM judge + human review), CValues responsibility and general capability; the report.

Per-candidate assets are partitioned by candidate (DuckDB column `candidate`), so one model can be
(re-)evaluated alone; the benchmark sample, the review decisions and the report are shared."""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    MetadataValue,
    Output,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from madef_assets.defs.evaluation import general, safetybench
from madef_assets.defs.evaluation import over_refusal as over_refusal_module
from madef_assets.defs.evaluation.candidates import (
    CANDIDATE_SCHEMA,
    FINGERPRINT_COLUMNS,
    candidate_llm,
    files_hash,
    fingerprint,
    rate_partition_mapping,
    read_checkpoints,
    resolve_candidate,
    sample_per_group,
    sources_hash,
    with_fingerprint,
)
from madef_assets.defs.evaluation.checks import (
    disjoint_from_sft_result,
    disjoint_from_sft_spec,
    no_regression_result,
    no_regression_spec,
)
from madef_assets.defs.evaluation.intervals import (
    NOT_SIGNIFICANT,
    bootstrap_mean_interval,
    compare_with_intervals,
    with_wilson,
)
from madef_assets.defs.evaluation.judging import (
    answered,
    parse_cvalues_choice,
    parse_responsibility_score,
    parse_safety_judgement,
    review_key,
    safety_label,
)
from madef_assets.defs.evaluation.llamafactory_eval import build_llamafactory_eval_asset, comparison_section
from madef_assets.defs.evaluation.report import (
    compare,
    lineage_by_category,
    marked_regressions,
    radar_png,
)
from madef_assets.defs.evaluation.xstest import REVIEW_DECISIONS
from madef_assets.defs.frames import concat_prompts
from madef_assets.defs.intent.assets import intent_chart_paths
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.panel import ask_panel
from madef_assets.defs.qualification.agreement import agreement_table, judge_reports, language_agreement_table
from madef_assets.defs.qualification.fitness import judge_verdict, labeler_verdict
from madef_assets.defs.qualification.labeler import agreement_by_language
from madef_assets.defs.selection.assets import fitness_sentence
from madef_assets.defs.selection.contamination import contaminated
from madef_assets.llm.resource import LLMResource
from madef_assets.prompts import family_version, template
from madef_assets.reports import markdown_image, markdown_table
from madef_assets.review.decisions import latest_decisions
from madef_assets.settings import QualificationConfig, Settings
from madef_assets.storage import run_sql

GROUP = "evaluation"
POOL = "duckdb"
PARTITIONED = {"partition_expr": "candidate"}
# SafetyBench prompts are rendered in code (the official format), so their ledger version is a constant.
SAFETYBENCH_PROMPT_VERSION = "safetybench-official@1"
# The judge's responsibility score (CValues' human-evaluation scale).
RESPONSIBILITY_SCALE = (1.0, 10.0)


def qualification_sections(
    judge_qualification: pl.DataFrame, labeler_qualification: pl.DataFrame | None, config: QualificationConfig
) -> list[str]:
    """The judge's agreement table (among the human, GPT-4 and string-matcher rows of the gold files) and
    the labeler's per language, each with its verdict, computed from their stored rows."""
    _, judge_words = judge_verdict(judge_qualification, config)
    sections = [
        f"## The judge against human labels (`judge_qualification`)\n{judge_words}\n\n"
        f"{agreement_table(judge_reports(judge_qualification, config))}"
    ]
    if labeler_qualification is not None:
        _, labeler_words = labeler_verdict(labeler_qualification, config)
        by_language = agreement_by_language(labeler_qualification, config.n_resamples, config.seed)
        sections.append(
            f"## The labeler against the sources' categories (`labeler_qualification`)\n{labeler_words}\n\n"
            f"{language_agreement_table(by_language)}"
        )
    return sections


def data_section(intent_distribution: pl.DataFrame, reports_dir: Path, report_dir: Path) -> str:
    """The data behind the SFT set as the paper's Figures 3-3..3-5 show it: prompts per source and
    category, and the top raw intent labels of each labeled source (charts drawn by intent_distribution)."""
    overall, per_source = intent_chart_paths(intent_distribution, reports_dir)
    images = [f"![{path.stem}]({os.path.relpath(path, report_dir)})" for path in (overall, *per_source.values())]
    return "## The data: intent distributions (Figures 3-3..3-5)\n" + "\n\n".join(images)


def learning_rate_section(comparison: pl.DataFrame, output_dir: Path, report_dir: Path) -> str:
    """§5.1.1's learning-rate comparison: the overlaid loss curves and each rate's final loss; every rate's
    tuned candidate is a column of the tables above."""
    final = (
        comparison.drop_nulls("loss")
        .group_by("rate", maintain_order=True)
        .agg(final_step=pl.col("step").last(), final_loss=pl.col("loss").last())
    )
    chart = os.path.relpath(output_dir / "learning_rate_comparison.png", report_dir)
    return (
        f"## Learning-rate comparison (§5.1.1)\nOne checkpoint per rate; each is a `tuned_<rate>` candidate in "
        f"the tables above.\n\n![learning_rate_comparison]({chart})\n\n{markdown_table(final)}"
    )


def inline_images(markdown: str, report_dir: Path) -> str:
    """The report's markdown with its local PNG links embedded, for the Dagster UI's metadata panel (a link
    whose file is missing stays a link)."""

    def embed(match: re.Match) -> str:
        path = (report_dir / match.group(1)).resolve()
        return markdown_image(path) if path.is_file() else match.group(0)

    return re.sub(r"!\[[^\]]*\]\(([^)]+\.png)\)", embed, markdown)


def build_evaluation_assets(settings: Settings) -> list:
    evaluation = settings.evaluation
    if not evaluation.candidates:
        return []
    candidates = StaticPartitionsDefinition([c.name for c in evaluation.candidates])
    by_name = {c.name: c for c in evaluation.candidates}
    report_dir = evaluation.report_dir
    taxonomy = Taxonomy.load(settings.taxonomy_path)

    def llm_for(candidate_model: pl.DataFrame, raw_prompts: bool) -> LLMResource:
        return candidate_llm(settings, candidate_model.row(0, named=True), raw_prompts)

    # Trained at several rates (§5.1.1): each tuned candidate depends on its rate's partition only.
    rate_mapping = (
        StaticPartitionMapping(rate_partition_mapping(evaluation.candidates)) if settings.training.partitioned else None
    )

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
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

    def candidate_model_row(candidate, checkpoints) -> dict:
        row = resolve_candidate(candidate, checkpoints)
        return {**row, "options": json.dumps(row["options"], sort_keys=True)}

    # --- SafetyBench ----------------------------------------------------------------------------------
    bench = evaluation.safetybench
    bench_sources = safetybench.configured_sources(bench)

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm", "json"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
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
            bench.get("per_category"),
            evaluation.seed,
        ).drop("bench_group")
        # in the configured order of the sources (zh before en in the paper's tables)
        questions = questions.sort(
            pl.col("source").replace_strict({n: i for i, n in enumerate(bench_sources)}), maintain_order=True
        )
        shots = safetybench.dev_shots_by_lang(
            bench.get("dev_file"), questions["lang"].unique(maintain_order=True).to_list()
        )
        metas = [json.loads(m) for m in questions["meta"]]
        prompts = [
            safetybench.render_prompt(m["question"], m["options"], lang, shots[lang].get(c, [])[:5])
            for m, lang, c in zip(metas, questions["lang"], questions["category"])
        ]
        dataset_hash = sources_hash(settings, bench_sources)
        tables, metadata = [], {}
        for mode in bench.get("answer_modes", ["logprobs"]):
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
                gen = llm.default_params.with_changes(max_new_tokens=bench.get("max_new_tokens", 64), stop=())
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

    @asset(group_name=GROUP, kinds={"duckdb", "polars"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
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

    # --- New-Safety benchmark, 14 categories ------------------------------------------------------
    new_safety = evaluation.new_safety
    new_safety_ins = {f"src_{name}": AssetIn(AssetKey(name)) for name in new_safety.get("sources", [])}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        pool=POOL,
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
        table = sample_per_group(
            clean, "category", "prompt_id", new_safety.get("per_category"), evaluation.seed
        ).select("prompt_id", "source", "lang", "category", "source_category", "prompt")
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

    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
    def new_safety_responses(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, new_safety_benchmark: pl.DataFrame
    ):
        """Each benchmark prompt answered by the candidate (chat template when the model has one)."""
        llm = llm_for(candidate_model, raw_prompts=False)
        params = llm.default_params.with_changes(max_new_tokens=new_safety.get("max_new_tokens"))
        batch = llm.generate(
            new_safety_benchmark["prompt"].to_list(), "new_safety_response@1", params=params, log=context.log
        )
        table = new_safety_benchmark.select("prompt_id", "category", "lang", "prompt").with_columns(
            candidate=pl.lit(context.partition_key),
            response=pl.Series([r.value if r.status == "ok" else None for r in batch.results], dtype=pl.Utf8),
            status=pl.Series([r.status for r in batch.results]),
            error=pl.Series([r.error for r in batch.results], dtype=pl.Utf8),
        )
        table = with_fingerprint(
            table, fingerprint(llm, params.as_dict(), sources_hash(settings, new_safety.get("sources", [])))
        )
        return Output(table, metadata=batch.metadata())

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
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

    # --- Responsibility (CValues) ------------------------------------------------------------------
    responsibility = evaluation.responsibility
    prompts_source = responsibility.get("prompts_source", "cvalues_responsibility")
    mcq_source = responsibility.get("mcq_source")

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
        ins={"candidate_model": AssetIn(), "prompts": AssetIn(AssetKey(prompts_source))},
    )
    def responsibility_responses(context: AssetExecutionContext, candidate_model: pl.DataFrame, prompts: pl.DataFrame):
        """The candidate's answers to the CValues responsibility prompts, responsibility.per_domain per domain."""
        sample = sample_per_group(
            prompts.with_columns(domain=pl.col("source_category")),
            "domain",
            "prompt_id",
            responsibility.get("per_domain"),
            evaluation.seed,
        )
        llm = llm_for(candidate_model, raw_prompts=False)
        batch = llm.generate(sample["prompt"].to_list(), "responsibility_response@1", log=context.log)
        table = sample.select("prompt_id", "domain", "lang", "prompt").with_columns(
            candidate=pl.lit(context.partition_key),
            response=pl.Series([r.value if r.status == "ok" else None for r in batch.results], dtype=pl.Utf8),
            status=pl.Series([r.status for r in batch.results]),
        )
        table = with_fingerprint(
            table, fingerprint(llm, llm.default_params.as_dict(), sources_hash(settings, [prompts_source]))
        )
        return Output(table, metadata=batch.metadata())

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
        deps=[AssetKey("judge_qualification")],
    )
    def responsibility_judgements(
        context: AssetExecutionContext, judge: LLMResource, responsibility_responses: pl.DataFrame
    ):
        """The judge's 1-10 responsibility score per answer (CValues' human-evaluation scale); an unparseable
        score is null and counted as unscored."""
        rows = responsibility_responses.to_dicts()
        judged = answered([r["response"] for r in rows], [r["status"] for r in rows])
        params = judge.default_params.with_changes(max_new_tokens=4, stop=("\n",))
        batch = judge.generate(
            [
                template("responsibility_judge", rows[i]["lang"]).render(
                    prompt=rows[i]["prompt"], response=rows[i]["response"]
                )
                for i in judged
            ],
            family_version("responsibility_judge"),
            params=params,
            log=context.log,
            refusals=True,
        )
        results = dict(zip(judged, batch.results))
        table = responsibility_responses.select("candidate", "prompt_id", "domain", "prompt", "response").with_columns(
            answered=pl.Series([i in results for i in range(len(rows))], dtype=pl.Boolean),
            score=pl.Series(
                [
                    parse_responsibility_score(results[i].value) if i in results and results[i].status == "ok" else None
                    for i in range(len(rows))
                ],
                dtype=pl.Int64,
            ),
            judge_raw_output=pl.Series(
                [
                    results[i].output if i in results and isinstance(results[i].output, str) else None
                    for i in range(len(rows))
                ],
                dtype=pl.Utf8,
            ),
        )
        return Output(
            table,
            metadata={
                **batch.metadata(),
                "unanswered": len(rows) - len(judged),
                "unscored": int(table["score"].is_null().sum()),
            },
        )

    mcq_ins = {"mcq": AssetIn(AssetKey(mcq_source))} if mcq_source else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "llm"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
        ins={"candidate_model": AssetIn(), **mcq_ins},
    )
    def responsibility_mcq_predictions(
        context: AssetExecutionContext, candidate_model: pl.DataFrame, **mcq: pl.DataFrame
    ):
        """The candidate's choice on each CValues responsibility MCQ (回复1 / 回复2 / other / refuse /
        need_check, rules in judging.parse_cvalues_choice); need_check goes to the review queue. Empty
        when responsibility.mcq_source is not configured."""
        schema = {
            "candidate": pl.Utf8,
            "prompt_id": pl.Utf8,
            "domain": pl.Utf8,
            "prompt": pl.Utf8,
            "label": pl.Utf8,
            "response": pl.Utf8,
            "choice": pl.Utf8,
            "review_key": pl.Utf8,
        }
        if not mcq:
            context.add_output_metadata({"note": "no responsibility.mcq_source configured"})
            return pl.DataFrame(schema=schema)
        questions = mcq["mcq"]
        llm = llm_for(candidate_model, raw_prompts=False)
        batch = llm.generate(questions["prompt"].to_list(), "responsibility_mcq@1", log=context.log)
        responses = [r.value if r.status == "ok" else None for r in batch.results]
        table = pl.DataFrame(
            {
                "candidate": context.partition_key,
                "prompt_id": questions["prompt_id"],
                "domain": questions["source_category"],
                "prompt": questions["prompt"],
                "label": questions["response"],
                "response": responses,
                "choice": [parse_cvalues_choice(r) for r in responses],
                "review_key": [
                    review_key("responsibility_mcq", context.partition_key, p, r)
                    for p, r in zip(questions["prompt_id"], responses)
                ],
            },
            schema=schema,
        )
        choices = {k: int(v) for k, v in table.group_by("choice").len().sort("choice").iter_rows()}
        context.add_output_metadata({**batch.metadata(), "choices": choices})
        return table

    # --- Over-refusal (XSTest) ----------------------------------------------------------------------
    over_refusal_assets = over_refusal_module.build_over_refusal_assets(settings, candidates, llm_for)

    # --- Human review ----------------------------------------------------------------------------------
    review_dir = evaluation.review_dir
    decisions_file = review_dir / "decisions.jsonl"

    over_refusal_ins = {"over_refusal_judgements": AssetIn()} if over_refusal_assets else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "json"},
        pool=POOL,
        partitions_def=candidates,
        metadata=PARTITIONED,
        ins={"new_safety_judgements": AssetIn(), "responsibility_mcq_predictions": AssetIn(), **over_refusal_ins},
    )
    def review_queue(
        context: AssetExecutionContext,
        new_safety_judgements: pl.DataFrame,
        responsibility_mcq_predictions: pl.DataFrame,
        **over_refusal: pl.DataFrame,
    ) -> pl.DataFrame:
        """What a human must decide for this candidate: New-Safety responses the judge was uncertain about,
        MCQ answers that need a check and XSTest answers where the judge and the string matcher disagree.
        Written to <review_dir>/queue/<candidate>.jsonl for the review page (`madef review`); decisions go
        to decisions.jsonl, which no asset ever rewrites."""
        uncertain = new_safety_judgements.filter(pl.col("judge_label") == "uncertain").select(
            "review_key",
            pl.lit("new_safety").alias("benchmark"),
            "candidate",
            "category",
            "prompt",
            "response",
            "judge_label",
            "judge_reason",
            pl.lit(["safe", "unsafe"]).alias("allowed_decisions"),
        )
        need_check = responsibility_mcq_predictions.filter(pl.col("choice") == "need_check").select(
            "review_key",
            pl.lit("responsibility_mcq").alias("benchmark"),
            "candidate",
            pl.col("domain").alias("category"),
            "prompt",
            "response",
            pl.col("choice").alias("judge_label"),
            pl.lit(None, pl.Utf8).alias("judge_reason"),
            pl.lit(["回复1", "回复2", "other", "refuse"]).alias("allowed_decisions"),
        )
        disagreements = [
            judgements.filter(pl.col("final_label") == "uncertain").select(
                "review_key",
                pl.lit(over_refusal_module.BENCHMARK).alias("benchmark"),
                "candidate",
                pl.col("type").alias("category"),
                "prompt",
                "response",
                "judge_label",
                pl.format(
                    "judge: {}; XSTest string matcher: {}",
                    "judge_label",
                    pl.col("matcher_label").fill_null("no answer"),
                ).alias("judge_reason"),
                pl.lit(REVIEW_DECISIONS).alias("allowed_decisions"),
            )
            for judgements in over_refusal.values()
        ]
        table = pl.concat([uncertain, need_check, *disagreements], how="vertical_relaxed")
        path = review_dir / "queue" / f"{context.partition_key}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.iter_rows(named=True)), encoding="utf-8"
        )
        context.add_output_metadata(
            {"queue_file": MetadataValue.path(str(path)), "decisions_file": MetadataValue.path(str(decisions_file))}
        )
        return table

    @asset(group_name=GROUP, kinds={"duckdb", "json"}, pool=POOL)
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

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
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

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
    def responsibility_scores(
        context: AssetExecutionContext,
        responsibility_judgements: pl.DataFrame,
        responsibility_mcq_predictions: pl.DataFrame,
        review_decisions: pl.DataFrame,
        responsibility_responses: pl.DataFrame,
    ) -> pl.DataFrame:
        """Per domain: the judge's mean responsibility score, and MCQ acc / acc* when the MCQ file is configured."""
        table = run_sql(
            "evaluation/responsibility_scores",
            judgements=responsibility_judgements,
            mcq_predictions=responsibility_mcq_predictions,
            decisions=review_decisions,
        )
        scores = {d: g["score"].drop_nulls().to_list() for (d,), g in responsibility_judgements.group_by("domain")}
        bounds = [
            bootstrap_mean_interval(scores.get(d, []), RESPONSIBILITY_SCALE, seed=evaluation.seed)
            for d in table["domain"]
        ]
        table = table.with_columns(
            ci_low=pl.Series([low for low, _ in bounds], dtype=pl.Float64),
            ci_high=pl.Series([high for _, high in bounds], dtype=pl.Float64),
        )
        if responsibility_responses.height:
            table = with_fingerprint(table, responsibility_responses.row(0, named=True))
        context.add_output_metadata(
            {
                "scores": MetadataValue.md(
                    markdown_table(
                        table.select(
                            "domain",
                            "prompts",
                            "scored",
                            "mean_score",
                            "ci_low",
                            "ci_high",
                            "mcq_questions",
                            "acc",
                            "acc_star",
                        )
                    )
                )
            }
        )
        return table

    # --- General capability --------------------------------------------------------------------------
    general_config = evaluation.general
    data_dir = general_config["data_dir"]

    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
    def general_capability_predictions(context: AssetExecutionContext, candidate_model: pl.DataFrame) -> Output:
        """gsm8k (few-shot chain of thought, final number exact match), MMLU / CMMLU / C-Eval val (k-shot,
        option log-probabilities) and HumanEval (pass@1, each program run in a sandboxed subprocess with a
        time and memory limit, never in this process), on the raw prompt as lm-evaluation-harness does."""
        llm = llm_for(candidate_model, raw_prompts=True)
        tables, metadata = [], {}
        for benchmark in ("gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"):
            spec = general_config.get(benchmark)
            if not spec:
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

    def predict_gsm8k(context, llm: LLMResource, benchmark: str, spec: dict):
        path = data_dir / spec["file"]
        shots_count = int(spec.get("shots", 8))
        items = general.load_gsm8k(path, limit=spec.get("limit"))
        params = llm.default_params.with_changes(
            max_new_tokens=spec.get("max_new_tokens", 256), stop=general.GSM8K_STOP
        )
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

    def predict_mcq(context, llm: LLMResource, benchmark: str, spec: dict):
        zip_path, mapping = data_dir / spec["zip"], data_dir / spec["mapping"]
        split = "val" if benchmark == "ceval" else "test"
        items = general.load_mcq_benchmark(
            benchmark, zip_path, mapping, split, limit_per_subject=spec.get("per_subject")
        )
        dev = general.load_mcq_benchmark(benchmark, zip_path, mapping, "dev")
        shots_count = int(spec.get("shots", 5))
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

    def predict_humaneval(context, llm: LLMResource, benchmark: str, spec: dict):
        path = data_dir / spec["file"]
        items = general.load_humaneval(path, limit=spec.get("limit"))
        params = llm.default_params.with_changes(
            max_new_tokens=spec.get("max_new_tokens", 512), stop=general.HUMANEVAL_STOP
        )
        batch = llm.generate([item.prompt for item in items], "humaneval@1", params=params, log=context.log)
        completions = [r.value if r.status == "ok" else "" for r in batch.results]
        programs = [general.humaneval_program(item, completion) for item, completion in zip(items, completions)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(
                pool.map(
                    lambda p: general.run_in_sandbox(
                        p, float(spec.get("timeout_s", 10)), int(spec.get("memory_mb", 1024))
                    ),
                    programs,
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
            {**params.as_dict(), "timeout_s": spec.get("timeout_s", 10), "memory_mb": spec.get("memory_mb", 1024)},
            [path],
        )

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL, partitions_def=candidates, metadata=PARTITIONED)
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

    # --- Report ------------------------------------------------------------------------------------------
    order = [c.name for c in evaluation.candidates]

    llamafactory_eval_scores = build_llamafactory_eval_asset(settings, candidates)
    report_over_refusal = {"over_refusal_scores": AssetIn()} if over_refusal_assets else {}
    report_llamafactory = {"llamafactory_eval_scores": AssetIn()} if llamafactory_eval_scores else {}
    report_labeler = {"labeler_qualification": AssetIn()} if settings.qualification.labeler_sources else {}
    report_rates = {"learning_rate_comparison": AssetIn()} if settings.training.partitioned else {}

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "markdown"},
        pool=POOL,
        check_specs=[no_regression_spec()],
        ins={
            "safetybench_scores": AssetIn(),
            "new_safety_scores": AssetIn(),
            "responsibility_scores": AssetIn(),
            "general_capability_scores": AssetIn(),
            "sft_dataset": AssetIn(),
            "attack_prompts": AssetIn(),
            "judge_qualification": AssetIn(),
            "sft_fitness": AssetIn(),
            "intent_distribution": AssetIn(),
            **report_over_refusal,
            **report_labeler,
            **report_llamafactory,
            **report_rates,
        },
    )
    def eval_report(
        context: AssetExecutionContext,
        safetybench_scores: pl.DataFrame,
        new_safety_scores: pl.DataFrame,
        responsibility_scores: pl.DataFrame,
        general_capability_scores: pl.DataFrame,
        sft_dataset: pl.DataFrame,
        attack_prompts: pl.DataFrame,
        judge_qualification: pl.DataFrame,
        sft_fitness: pl.DataFrame,
        intent_distribution: pl.DataFrame,
        **optional: pl.DataFrame,
    ):
        """The paper's four views with every candidate against the first (the baseline) and deltas:
        SafetyBench (Table 5-1), 14-category safe rates + radar chart (Figure 5-3), responsibility
        (Table 5-2), general capability (Table 5-3) with LLaMA-Factory's evaluator beside it, and over-refusal
        on XSTest; every rate with its n and 95 % interval, deltas whose intervals overlap marked n.s.; the
        fitness verdict first and the judge's
        qualification beside the scores it produced; per category, the SFT sources and generation routes that
        fed it next to its eval delta. Markdown + PNG in the report folder."""
        # SafetyBench: generate mode is the headline (Table 5-1), log-probability mode the second table; the
        # regression check and the long table follow the headline. Categories read `SB-IA (Illegal Activities)`.
        modes = safetybench.report_modes(safetybench_scores["mode"].unique(maintain_order=True).to_list())
        bench_rows = safetybench.report_rows(safetybench_scores, next(iter(modes), ""))
        category_order = pl.DataFrame({"category": list(taxonomy.categories)})
        safety_table = category_order.join(
            compare(new_safety_scores, "category", "safe_rate", order), on="category", how="left"
        )
        refusal_scores = optional.get("over_refusal_scores", pl.DataFrame())
        refusal_scores = (
            refusal_scores.with_columns(item=pl.format("{} prompts, {}: {} rate", "prompt_label", "type", "measure"))
            if refusal_scores.height
            else refusal_scores
        )
        mcq = with_wilson(responsibility_scores.filter(pl.col("mcq_questions") > 0), "mcq_correct", "mcq_questions")
        general_rows = general_capability_scores.filter(pl.col("subject") == "(all)")
        lineage = lineage_by_category(run_sql("evaluation/sft_lineage", sft=sft_dataset, attack=attack_prompts))
        delta_columns = [c for c in safety_table.columns if c.startswith("Δ ")]
        lineage_table = category_order.join(
            safety_table.select("category", *delta_columns), on="category", how="left"
        ).join(lineage, on="category", how="left")
        report_dir.mkdir(parents=True, exist_ok=True)
        radar = radar_png(
            safety_table, "category", order, "Safe rate per category (%)", report_dir / "new_safety_radar.png"
        )
        _, judge_words = judge_verdict(judge_qualification, settings.qualification)
        judge = settings.roles["judge"]
        panel = (
            f"the panel {', '.join(f'`{m.model}`' for m in (judge, *judge.panel))} (majority)"
            if judge.panel
            else f"`{judge.model}`"
        )
        judged_by = f"Judged by {panel}: {judge_words}."

        def with_intervals(scores: pl.DataFrame, row: str, value: str, n: str, rows: pl.DataFrame | None = None) -> str:
            table = compare_with_intervals(scores, row, value, n, order)
            return markdown_table(rows.join(table, on=row, how="left") if rows is not None and table.height else table)

        sections = [
            "# madef evaluation report",
            f"**Fitness verdict — {fitness_sentence(sft_fitness)}**",
            f"Candidates: {', '.join(order)} (deltas against {order[0]}). Every rate: value [95 % interval] n=…; "
            f"a delta whose intervals overlap is marked {NOT_SIGNIFICANT} (not significant).",
            *[
                f"{safetybench.report_heading(safetybench_scores, mode)}\n\n"
                + with_intervals(safetybench.report_rows(safetybench_scores, mode), "item", "score", "questions")
                for mode in modes
            ],
            f"## New-Safety benchmark: safe rate per category (Figure 5-3 form)\n{judged_by}\n\n"
            f"{with_intervals(new_safety_scores, 'category', 'safe_rate', 'prompts', category_order)}\n\n"
            "![radar](new_safety_radar.png)",
            *(
                [
                    "## Over-refusal (XSTest): compliance on safe prompts, refusal on unsafe contrasts "
                    "(higher is better)\n"
                    f"{judged_by} Answers where the judge and XSTest's string matcher disagree wait for "
                    "review and count "
                    f"against the model until decided.\n\n{with_intervals(refusal_scores, 'item', 'rate', 'prompts')}"
                ]
                if refusal_scores.height
                else []
            ),
            f"## Responsibility (Table 5-2 form): mean judge score 1-10 per domain\n{judged_by}\n\n"
            f"{with_intervals(responsibility_scores, 'domain', 'mean_score', 'scored')}",
            *(
                [f"### Responsibility MCQ\n{with_intervals(mcq, 'domain', 'acc', 'mcq_questions')}"]
                if mcq.height
                else []
            ),
            "## General capability (Table 5-3 form)\n"
            f"{with_intervals(general_rows, 'benchmark', 'score', 'questions')}",
            *(
                [comparison_section(general_rows, optional["llamafactory_eval_scores"], order)]
                if "llamafactory_eval_scores" in optional
                else []
            ),
            *qualification_sections(judge_qualification, optional.get("labeler_qualification"), settings.qualification),
            *(
                [learning_rate_section(optional["learning_rate_comparison"], settings.training.output_dir, report_dir)]
                if "learning_rate_comparison" in optional
                else []
            ),
            data_section(intent_distribution, settings.state_dir / "reports", report_dir),
            "## What fed each category: SFT sources/routes next to the safe-rate delta\n"
            f"{markdown_table(lineage_table)}",
        ]
        report_path = report_dir / "eval_report.md"
        report_path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        views = {
            "safetybench": (bench_rows, "item", "score"),
            "new_safety": (new_safety_scores, "category", "safe_rate"),
            "over_refusal": (refusal_scores, "item", "rate"),
            "responsibility": (responsibility_scores, "domain", "mean_score"),
            "general": (general_rows, "benchmark", "score"),
        }
        long = pl.concat(
            [
                rows.select(
                    "candidate",
                    pl.lit(view).alias("view"),
                    pl.col(row).alias("item"),
                    pl.col(value).alias("score"),
                    "ci_low",
                    "ci_high",
                )
                for view, (rows, row, value) in views.items()
                if rows.height
            ],
            how="vertical_relaxed",
        )
        yield Output(
            long,
            metadata={
                "fitness_verdict": fitness_sentence(sft_fitness),
                "judge_qualification": judge_words,
                "report": MetadataValue.md(inline_images("\n\n".join(sections), report_dir)),
                "report_file": MetadataValue.path(str(report_path)),
                "radar_chart": MetadataValue.path(str(radar)),
            },
        )
        yield no_regression_result(
            marked_regressions(new_safety_scores, "category", "safe_rate", order)
            + marked_regressions(bench_rows, "item", "score", order, "SafetyBench ")
            + (marked_regressions(refusal_scores, "item", "rate", order, "XSTest ") if refusal_scores.height else [])
        )

    return [
        candidate_model,
        safetybench_predictions,
        safetybench_scores,
        new_safety_benchmark,
        new_safety_responses,
        new_safety_judgements,
        responsibility_responses,
        responsibility_judgements,
        responsibility_mcq_predictions,
        review_queue,
        review_decisions,
        new_safety_scores,
        responsibility_scores,
        general_capability_predictions,
        general_capability_scores,
        eval_report,
        *over_refusal_assets,
        *([llamafactory_eval_scores] if llamafactory_eval_scores else []),
    ]
