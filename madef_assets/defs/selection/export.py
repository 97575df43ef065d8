"""Writing the SFT set as a LLaMA-Factory dataset folder: staged first, published only after the
contamination gate passed, withdrawn when it blocks."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

DATASET_NAME = "madef_sft"
DATASET_INFO = "dataset_info.json"
MANIFEST = "madef_manifest.json"  # which sft_dataset content the folder holds, and a hash of each file
CARD = "README.md"  # the dataset card (Hugging Face form)
LICENSES = "licenses.csv"  # every source with its license and rows contributed
DATA_DIR = "data"  # the Parquet rows the card's `configs` point at


def write_llamafactory_dataset(
    rows: Sequence[Mapping[str, str]], folder: Path, formats: tuple[str, ...]
) -> dict[str, Path]:
    """alpaca JSON (instruction/input/output) and/or sharegpt JSON (conversations) of the rows, with the
    dataset_info.json that registers them for LLaMA-Factory (`dataset: madef_sft`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    info: dict[str, dict] = {}
    records = [{k: row[k] for k in ("instruction", "input", "output")} for row in rows]
    for fmt in formats:
        name = DATASET_NAME if fmt == "alpaca" else f"{DATASET_NAME}_{fmt}"
        path = folder / f"{name}.json"
        if fmt == "alpaca":
            payload = records
            info[name] = {
                "file_name": path.name,
                "formatting": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output"},
            }
        elif fmt == "sharegpt":
            payload = [
                {
                    "conversations": [
                        {"from": "human", "value": "\n\n".join(filter(None, (r["instruction"], r["input"])))},
                        {"from": "gpt", "value": r["output"]},
                    ]
                }
                for r in records
            ]
            info[name] = {
                "file_name": path.name,
                "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
            }
        else:
            raise ValueError(f"unknown SFT export format {fmt!r}: alpaca or sharegpt")
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        written[fmt] = path
    (folder / DATASET_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return written


# --- staging, publishing, withdrawing -------------------------------------------------------------
# The folder LLaMA-Factory trains on (method.sft_export_dir) only ever holds a set whose contamination
# gate passed: sft_dataset writes a hidden staging folder next to it, and the sft_dataset_folder asset
# (which Dagster runs only when the blocking gate passed) moves it into place. A blocked sft_dataset
# removes the staging folder and withdraws whatever an earlier run published.


def staging_dir(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.staging"


def _owned(name: str) -> bool:
    """Files madef writes into the dataset folder (and so may replace or remove)."""
    return name in (DATASET_INFO, MANIFEST, CARD, LICENSES, DATA_DIR) or (
        name.startswith(DATASET_NAME) and name.endswith(".json")
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_llamafactory_dataset(
    rows: Sequence[Mapping[str, str]],
    folder: Path,
    formats: tuple[str, ...],
    sft_version: str,
    attachments: Mapping[str, bytes] | None = None,
    notes: Mapping | None = None,
) -> dict[str, Path]:
    """Write the dataset into the staging folder of `folder` (replacing any earlier staging), with the
    attachments (relative path → bytes: card, licenses, Parquet) and a manifest naming the sft_dataset content
    version, every file's hash (by relative path) and the `notes` (e.g. the combined license terms)."""
    staging = staging_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)
    written = write_llamafactory_dataset(rows, staging, formats)
    for name, content in (attachments or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    files_version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {
        "sft_version": sft_version,
        "files_version": files_version,
        "rows": len(rows),
        "formats": list(formats),
        "files": files,
        **(notes or {}),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return {fmt: folder / path.name for fmt, path in written.items()}


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a ready folder (dataset_info.json present, every listed file with its hash), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    for name, digest in manifest.get("files", {}).items():
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            return None
    return manifest if (folder / DATASET_INFO).is_file() else None


def publish_staged(folder: Path, sft_version: str) -> dict:
    """Move the staged folder into `folder` and return its manifest. Refuses when nothing is staged, when
    the staged content is not `sft_version` (the current sft_dataset), or when `folder` holds files madef
    did not write."""
    staging = staging_dir(folder)
    manifest = read_manifest(staging)
    if manifest is None and not staging.exists():
        published = read_manifest(folder)
        if published is not None and published["sft_version"] == sft_version:
            return published  # already published (a re-run of the publishing step alone)
    if manifest is None:
        raise FileNotFoundError(
            f"no complete staged SFT folder at {staging}: the last sft_dataset run did not pass its "
            "contamination gate (or did not finish); materialize sft_dataset again"
        )
    if manifest["sft_version"] != sft_version:
        raise ValueError(
            f"the staged SFT folder holds sft_dataset version {manifest['sft_version']}, the table is at "
            f"{sft_version}: materialize sft_dataset again"
        )
    foreign = sorted(p.name for p in folder.iterdir() if not _owned(p.name)) if folder.is_dir() else []
    if foreign:
        raise ValueError(f"refusing to replace {folder}: it holds files madef did not write: {foreign[:5]}")
    previous = folder.parent / f".{folder.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return manifest


def withdraw_dataset(folder: Path) -> list[str]:
    """Remove the staging folder and madef's files from `folder` (dataset_info.json first, so the folder
    stops being loadable at once); the folder itself goes too when nothing else is left in it."""
    shutil.rmtree(staging_dir(folder), ignore_errors=True)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for name in [DATASET_INFO, MANIFEST, *sorted(p.name for p in folder.iterdir() if _owned(p.name))]:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists():
            path.unlink()
            removed.append(name)
    if not any(folder.iterdir()):
        folder.rmdir()
    return removed


def export_published(folder: Path, destination: Path) -> list[str]:
    """Copy a published set (every file its manifest lists, and the manifest) to `destination`, for sharing.
    Refuses a folder that is not a complete published set and a destination that already holds files."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(
            f"no complete published SFT set at {folder}: run `madef run` (sft_dataset_folder) first"
        )
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"refusing to export into {destination}: it is not empty")
    names = [*manifest["files"], MANIFEST]
    for name in names:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / name, destination / name)
    return names
