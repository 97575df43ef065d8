"""The bundled model measured as judge and as labeler at a size larger than the demo's: the qualification
group of the demo profile (same prompts, parsers, ledger and metric code) with a bigger seeded sample.
Prints the judge's agreement table (beside the human, GPT-4 and string-matcher rows), the labeler's per
language, and both verdicts. Reuses the converted model in state/models; its ledger is a temp folder.

    .venv/bin/python bench/qualify_bundled.py                       # 30 XSTest answers per model, all PKU pairs,
                                                                    # 3 labeler prompts per language and category
    .venv/bin/python bench/qualify_bundled.py --per-model 150 --labeler-per-category 10
"""

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from dagster import AssetKey, DagsterInstance

from madef_assets.definitions import MAIN_JOB, build_definitions
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT
from madef_assets.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-model", type=int, default=30)
    parser.add_argument("--pku-pairs", type=int, default=None)
    parser.add_argument("--labeler-per-category", type=int, default=3)
    args = parser.parse_args()
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["qualification"].update(
        per_model=args.per_model, pku_pairs=args.pku_pairs, labeler_per_category=args.labeler_per_category
    )
    with tempfile.TemporaryDirectory() as folder:
        profile = Path(folder) / "qualify.yaml"
        profile.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        settings = load_settings(
            str(profile),
            env={
                "MADEF_STATE_DIR": str(Path(folder) / "state"),
                "MADEF_MODELS_DIR": str(PROJECT_ROOT / "state" / "models"),
            },
        )
        keys = [
            AssetKey("judge_qualification"),
            AssetKey("labeler_qualification"),
            *(
                key
                for name in settings.qualification.labeler_sources
                for key in (AssetKey(name), AssetKey(["quarantine", name]))
            ),
        ]
        job = build_definitions(settings).resolve_job_def(MAIN_JOB)
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=DagsterInstance.ephemeral(), asset_selection=keys, raise_on_error=False
        )
        seconds = time.perf_counter() - started
    print(
        f"model {settings.roles['judge'].model}, {seconds:.0f} s; per_model {args.per_model}, "
        f"pku_pairs {args.pku_pairs or 'all'}, labeler_per_category {args.labeler_per_category}\n"
    )
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if event.asset_key.to_user_string() in ("judge_qualification", "labeler_qualification"):
            name = event.asset_key.to_user_string()
            print(f"## {name}\n\n{metadata['agreement'].value}\n\n{metadata['verdict'].value}\n")


if __name__ == "__main__":
    main()
