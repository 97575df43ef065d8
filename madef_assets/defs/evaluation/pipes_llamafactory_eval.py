"""Runs LLaMA-Factory's evaluator (MMLU / CMMLU / C-Eval) inside the training environment for Dagster.

Started by the `llamafactory_eval_scores` asset through Dagster Pipes with the training environment's Python;
needs only `dagster-pipes` and `llamafactory` there, nothing from madef. `llamafactory-cli eval` raises
NotImplementedError in LLaMA-Factory 0.9.5 (launcher.py), so this calls the evaluator the command ran,
`llamafactory.eval.evaluator.Evaluator(args).eval()`, once per task (one model load each, one import).
"""

import time
import traceback

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        from llamafactory.eval.evaluator import Evaluator

        for task in pipes.get_extra("tasks"):
            pipes.log.info(f"llamafactory eval {task['args']['task']}: {task['args']}")
            started = time.monotonic()
            try:
                Evaluator(dict(task["args"])).eval()
                error = None
            except Exception as exc:  # reported to the asset, which records the benchmark as failed
                error = "".join(traceback.format_exception(exc))[-3000:]
                pipes.log.error(error)
            pipes.report_custom_message(
                {"benchmark": task["benchmark"], "error": error, "wall_seconds": round(time.monotonic() - started, 1)}
            )


if __name__ == "__main__":
    main()
