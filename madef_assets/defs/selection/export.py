"""Writing the SFT set as a LLaMA-Factory dataset folder."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

DATASET_NAME = "madef_sft"


def write_llamafactory_dataset(rows: Sequence[Mapping[str, str]], folder: Path, formats: tuple[str, ...]) -> dict[str, Path]:
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
            info[name] = {"file_name": path.name, "formatting": "alpaca",
                          "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
        elif fmt == "sharegpt":
            payload = [{"conversations": [{"from": "human", "value": "\n\n".join(filter(None, (r["instruction"], r["input"])))},
                                          {"from": "gpt", "value": r["output"]}]} for r in records]
            info[name] = {"file_name": path.name, "formatting": "sharegpt", "columns": {"messages": "conversations"},
                          "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
        else:
            raise ValueError(f"unknown SFT export format {fmt!r}: alpaca or sharegpt")
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        written[fmt] = path
    (folder / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return written
