"""General capability as the paper measured it: LLaMA-Factory's own evaluator (MMLU / CMMLU / C-Eval) on
each local candidate, next to madef's numbers (`general_capability_scores`).

What LLaMA-Factory 0.9.5 needs (llamafactory/eval/evaluator.py, eval/template.py, hparams/evaluation_args.py):

- `llamafactory-cli eval` itself only raises NotImplementedError in 0.9.5 (launcher.py: "Evaluation will be
  deprecated in the future"); the evaluator it ran is still there, so pipes_llamafactory_eval.py calls
  `Evaluator(args).eval()` with the arguments the command took (`task`, `task_dir`, `lang`, `n_shot`,
  `batch_size`, `seed`, `save_dir`, `template`, `model_name_or_path`).
- `task` is `<folder>_<split>` (`mmlu_test`, `cmmlu_test`, `ceval_validation`). It reads
  `<task_dir>/<folder>/mapping.json` (subject -> name, category; through transformers' cached_file, which
  takes a local folder as is) and loads each subject with `datasets.load_dataset(<task_dir>/<folder>,
  name=<subject>)`: the shots are `n_shot` rows of its `train` split, shuffled with the seed, the questions
  its `<split>` split, rows `{question, A, B, C, D, answer}`. Its Hub folders are loading scripts, which
  datasets 4 no longer runs; so the bundled zips are written at run time as a local dataset folder whose
  README.md declares one config per subject (`write_task_folder`), read offline.
- The prompt: the eval template (`en`: "The following are multiple choice questions (with answers) about
  {subject}.", `zh`: "以下是中国关于{subject}考试的单项选择题…"), each shot a user/assistant turn, all
  rendered by the chat `template`; the answer is the argmax over the last-position logits of the tokens of
  A-D. `save_dir` gets results.json (`{subject: {index: letter}}`) and results.log (`Average: 41.50` and
  one line per category), and must not exist beforehand.
"""

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, PartitionsDefinition, PipesSubprocessClient

from madef_assets.defs.evaluation.candidates import candidate_pools, per_candidate_asset
from madef_assets.defs.evaluation.intervals import with_wilson
from madef_assets.defs.sources.benchmark_files import McqItem, load_mcq_benchmark
from madef_assets.llm.engines import ENGINES
from madef_assets.llm.model_files import resolve_model_path
from madef_assets.reports import markdown_table
from madef_assets.settings import LlamaFactoryEvalConfig, Settings

PIPES_SCRIPT = str(Path(__file__).with_name("pipes_llamafactory_eval.py"))

# benchmark -> (LLaMA-Factory split name, lang); madef's split of the same questions.
TASKS = {"mmlu": ("test", "en"), "cmmlu": ("test", "zh"), "ceval": ("validation", "zh")}
SOURCE_SPLITS = {"mmlu": "test", "cmmlu": "test", "ceval": "val"}
SERVED_REASON = (
    "served candidate without local weights: LLaMA-Factory's evaluator loads the weights itself; give the "
    "candidate a `checkpoint:` of this project (a served checkpoint is evaluated from its folder)"
)
SCORE_SCHEMA = {
    "candidate": pl.Utf8,
    "benchmark": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "questions": pl.Int64,
    "correct": pl.Int64,
    "score": pl.Float64,
    "categories": pl.Utf8,
    "model": pl.Utf8,
    "template": pl.Utf8,
    "n_shot": pl.Int64,
}
WHY_THEY_DIFFER = (
    "The two differ by design on the same questions and shot count: madef scores the raw k-shot prompt "
    "(lm-evaluation-harness style, the first k dev rows, the log-probability of each option's letter token), "
    "LLaMA-Factory renders the shots as chat turns through the candidate's chat template, draws its k shots "
    "from the dev rows at random (seeded) and takes the argmax of the A-D logits at the last position, so a "
    "model sensitive to its prompt format scores differently; on the demo's few questions the gap is mostly noise."
)


def _row(item: McqItem) -> dict[str, str]:
    return {"question": item.question, **dict(zip("ABCD", item.options)), "answer": item.answer or ""}


def write_task_folder(
    benchmark: str, zip_path: Path, mapping_path: Path, per_subject: int | None, task_dir: Path
) -> dict[str, list[str]]:
    """`<task_dir>/<benchmark>/` as LLaMA-Factory's evaluator loads it offline: mapping.json, per subject a
    `train` split (the dev rows, for the shots) and the evaluated split (`test`, C-Eval `validation`: the
    first `per_subject` rows, the questions madef evaluates), and a README.md whose `configs` name each
    subject's files (datasets' no-script folder format). Returns the reference letters per subject, in order."""
    split = TASKS[benchmark][0]
    folder = task_dir / benchmark
    folder.mkdir(parents=True)
    mapping = json.loads(Path(mapping_path).read_text(encoding="utf-8"))
    (folder / "mapping.json").write_text(json.dumps(mapping, ensure_ascii=False, indent=1), encoding="utf-8")
    files = {
        "train": load_mcq_benchmark(benchmark, zip_path, mapping_path, "dev"),
        split: load_mcq_benchmark(
            benchmark, zip_path, mapping_path, SOURCE_SPLITS[benchmark], limit_per_subject=per_subject
        ),
    }
    configs, references = [], {}
    for subject in mapping:
        for name, items in files.items():
            rows = [_row(item) for item in items if item.subject == subject]
            (folder / subject).mkdir(exist_ok=True)
            (folder / subject / f"{name}.jsonl").write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
            )
        configs.append(
            {
                "config_name": subject,
                "data_files": [{"split": name, "path": f"{subject}/{name}.jsonl"} for name in files],
            }
        )
        references[subject] = [item.answer for item in files[split] if item.subject == subject]
    import yaml

    header = yaml.safe_dump({"configs": configs}, allow_unicode=True, sort_keys=False)
    (folder / "README.md").write_text(f"---\n{header}---\n", encoding="utf-8")
    return references


def evaluator_args(
    model: Path,
    template: str | None,
    benchmark: str,
    task_dir: Path,
    save_dir: Path,
    n_shot: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """The arguments of one `llamafactory-cli eval` run (EvaluationArguments + model and data arguments)."""
    split, lang = TASKS[benchmark]
    args = {
        "model_name_or_path": str(model),
        "task": f"{benchmark}_{split}",
        "task_dir": str(task_dir),
        "lang": lang,
        "n_shot": n_shot,
        "batch_size": batch_size,
        "seed": seed,
        "save_dir": str(save_dir),
    }
    return {**args, "template": template} if template else args


def template_for(candidate: str, config: LlamaFactoryEvalConfig, training_args: Mapping[str, Any]) -> str | None:
    """The chat template LLaMA-Factory renders a candidate's prompts with: `templates[candidate]`, else
    `template`, else the one it was trained with (training.args.template); None: the tokenizer's own or none."""
    return config.templates.get(candidate) or config.template or training_args.get("template")


def read_results(save_dir: Path, references: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """One benchmark's outcome from the evaluator's save_dir: `score` (its printed Average), `categories`
    (every line of results.log), and `questions` / `correct` counted from results.json against the references."""
    categories = {}
    for line in (save_dir / "results.log").read_text(encoding="utf-8").splitlines():
        name, _, value = line.rpartition(":")
        if name.strip():
            categories[name.strip()] = float(value)
    predictions = json.loads((save_dir / "results.json").read_text(encoding="utf-8"))
    answered = [
        (predictions.get(subject, {}).get(str(index)), answer)
        for subject, answers in references.items()
        for index, answer in enumerate(answers)
    ]
    return {
        "score": categories.get("Average"),
        "categories": json.dumps(categories, ensure_ascii=False),
        "questions": len(answered),
        "correct": sum(predicted == answer for predicted, answer in answered),
    }


def score_table(candidate: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (benchmark, status, reason and, when ok, the read_results fields) as the asset's table."""
    return pl.DataFrame(
        [{**{k: None for k in SCORE_SCHEMA}, **row, "candidate": candidate} for row in rows], schema=SCORE_SCHEMA
    )


def _with_interval(row: Mapping[str, Any]) -> str:
    return f"{row['score']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}] n={row['questions']}"


def outcome_rows(
    tasks: Sequence[Mapping[str, Any]],
    outcomes: Mapping[str, Mapping[str, Any]],
    references: Mapping[str, Mapping[str, Sequence[str]]],
    template: str | None,
) -> list[dict[str, Any]]:
    """One row per task from the evaluator's reported outcome: failed (its error's last lines) or ok (its results)."""
    rows = []
    for task in tasks:
        benchmark, args = task["benchmark"], task["args"]
        outcome = outcomes.get(benchmark, {"error": "the evaluator reported no outcome"})
        common = {
            "benchmark": benchmark,
            "model": args["model_name_or_path"],
            "template": template,
            "n_shot": args["n_shot"],
        }
        if outcome.get("error"):
            rows.append({**common, "status": "failed", "reason": outcome["error"][-500:]})
        else:
            rows.append({**common, "status": "ok", **read_results(Path(args["save_dir"]), references[benchmark])})
    return rows


def comparison_section(general_rows: pl.DataFrame, llamafactory_rows: pl.DataFrame, order: Sequence[str]) -> str:
    """The report's "General capability: madef vs llamafactory-cli eval": per benchmark and candidate, madef's
    score [95 % interval] n and LLaMA-Factory's score n (or why it did not run), their difference, and why."""
    madef = {(r["benchmark"], r["candidate"]): r for r in general_rows.iter_rows(named=True)}
    factory = with_wilson(
        llamafactory_rows.with_columns(pl.col("correct", "questions").fill_null(0)), "correct", "questions"
    )
    rank = pl.col("candidate").replace_strict({c: i for i, c in enumerate(order)}, default=len(order))
    lines = [
        "| benchmark | candidate | madef | llamafactory-cli eval | Δ (LLaMA-Factory − madef) |",
        "|---|---|---|---|---|",
    ]
    for row in factory.sort(pl.col("benchmark"), rank).iter_rows(named=True):
        ours = madef.get((row["benchmark"], row["candidate"]))
        ours_text = _with_interval(ours) if ours else "—"
        if row["status"] != "ok":
            theirs, delta = f"{row['status']}: {row['reason']}", "—"
        else:
            theirs, delta = _with_interval(row), f"{row['score'] - ours['score']:+.1f}" if ours else "—"
        lines.append(f"| {row['benchmark']} | {row['candidate']} | {ours_text} | {theirs} | {delta} |")
    return f"## General capability: madef vs llamafactory-cli eval\n{WHY_THEY_DIFFER}\n\n" + "\n".join(lines)


def build_llamafactory_eval_asset(settings: Settings, candidates: PartitionsDefinition):
    """`llamafactory_eval_scores` (None when evaluation.llamafactory_eval.enabled is false or no MMLU / CMMLU /
    C-Eval is configured under evaluation.general, whose files, `per_subject` and `shots` it shares)."""
    config, general = settings.evaluation.llamafactory_eval, settings.evaluation.general
    benchmarks = [b for b in TASKS if b in general.mcq()]
    if not config.enabled or not benchmarks:
        return None

    # LLaMA-Factory's evaluator loads the candidate's weights from disk, whether madef serves or loads them
    @per_candidate_asset(candidates, {"duckdb", "pytorch"}, pool_of=candidate_pools(settings))
    def llamafactory_eval_scores(
        context: AssetExecutionContext, pipes_subprocess_client: PipesSubprocessClient, candidate_model: pl.DataFrame
    ) -> Output:
        """MMLU / CMMLU / C-Eval scored by LLaMA-Factory's own evaluator (what `llamafactory-cli eval` ran), in
        the training environment through Dagster Pipes, on the questions madef's general_capability_predictions
        asks (same files, per_subject, shots), from task folders written at run time in the state folder; one
        row per benchmark. It loads the weights on disk, a served checkpoint's folder included; a served model
        without local weights gets rows saying why it is skipped."""
        name, row = context.partition_key, candidate_model.row(0, named=True)
        if not row["weights"]:
            rows = [{"benchmark": b, "status": "skipped", "reason": SERVED_REASON} for b in benchmarks]
            return Output(score_table(name, rows), metadata={"skipped": SERVED_REASON})
        workdir = settings.state_dir / "llamafactory_eval" / name
        shutil.rmtree(workdir, ignore_errors=True)
        model = resolve_model_path(row["weights"], settings.models_dir)
        template = template_for(name, config, settings.training.args)
        references, tasks = {}, []
        for benchmark in benchmarks:
            spec = general.mcq()[benchmark]
            references[benchmark] = write_task_folder(
                benchmark,
                general.data_dir / spec.zip,
                general.data_dir / spec.mapping,
                spec.per_subject,
                workdir / "tasks",
            )
            tasks.append(
                {
                    "benchmark": benchmark,
                    "args": evaluator_args(
                        model,
                        template,
                        benchmark,
                        workdir / "tasks",
                        workdir / "results" / benchmark,
                        spec.shots,
                        config.batch_size,
                        settings.evaluation.seed,
                    ),
                }
            )
        context.log.info(f"closed {ENGINES.release()} loaded model engine(s): the evaluator loads its own copy")
        session = pipes_subprocess_client.run(
            command=[str(settings.training.env_python), PIPES_SCRIPT],
            context=context,
            extras={"tasks": tasks},
            env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(workdir / "cache")},
        )
        outcomes = {m["benchmark"]: m for m in session.get_custom_messages()}
        table = score_table(name, outcome_rows(tasks, outcomes, references, template))
        return Output(
            table,
            metadata={
                "scores": MetadataValue.md(markdown_table(table.drop("categories", "model"))),
                "failed": table.filter(pl.col("status") == "failed")["benchmark"].to_list(),
            },
        )

    return llamafactory_eval_scores
