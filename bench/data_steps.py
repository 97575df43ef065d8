"""Data steps at paper scale: 200k synthetic prompt rows (zh and en, lengths drawn from the bundled data,
5 % near-duplicates, 1 % exact duplicates) through madef's exact + MinHash dedup and the SQL selection,
against a straightforward pandas implementation (pandas string normalization + drop_duplicates, the
same datasketch MinHash + LSH loop, pandas rank/filter/group cap for the selection). Each path runs in
its own process (peak RSS is per path); medians of --repeats runs.

    .venv/bin/python bench/data_steps.py [--rows 200000] [--repeats 3]
"""

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import time

import polars as pl

from madef_assets.project import PROJECT_ROOT

THRESHOLD, PERMUTATIONS, SEED = 0.8, 64, 0
SELECTION = {
    "perplexity_quantile": 0.9,
    "min_response_safety": 0.5,
    "min_single_response_safety": 0.5,
    "max_instruction_safety": 0.9,
    "per_category_cap": 100000,
    "safety_target": None,
}
CATEGORIES = ["OFF", "UB", "CIA", "PP", "EM", "PMH", "IA", "MI", "DP", "NS", "EX", "PR", "DT", "PS"]


def synthetic_rows(count: int, seed: int = 0) -> pl.DataFrame:
    """Prompts with the bundled data's languages and lengths: zh ones drawn character by character and en
    ones word by word from the bundled S-Eval prompts (so distinct rows share few 3-grams); 5 % are
    near-duplicates of an earlier row (one character changed or a word added), 1 % exact copies."""
    rng = random.Random(seed)
    samples = {}
    for lang in ("zh", "en"):
        lines = (PROJECT_ROOT / f"data/s_eval/base_risk_{lang}_sample.jsonl").read_text(encoding="utf-8").splitlines()
        samples[lang] = [json.loads(line)["prompt"] for line in lines]
    zh_chars = [c for text in samples["zh"] for c in text if not c.isspace()]
    en_words = [w for text in samples["en"] for w in text.split()]
    zh_lengths = [len(t) for t in samples["zh"]]
    en_lengths = [len(t.split()) for t in samples["en"]]
    prompts: list[str] = []
    langs: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if prompts and roll < 0.06:
            source = rng.randrange(len(prompts))
            text = prompts[source]
            if roll < 0.05:
                position = rng.randrange(len(text))
                text = (
                    text[:position] + rng.choice("的了是abc") + text[position + 1 :]
                    if rng.random() < 0.5
                    else text + " please"
                )
            prompts.append(text)
            langs.append(langs[source])
        elif rng.random() < 0.5:
            prompts.append("".join(rng.choices(zh_chars, k=rng.choice(zh_lengths))))
            langs.append("zh")
        else:
            prompts.append(" ".join(rng.choices(en_words, k=rng.choice(en_lengths))))
            langs.append("en")
    return pl.DataFrame(
        {
            "prompt_id": [f"p{i:07d}" for i in range(count)],
            "prompt": prompts,
            "lang": langs,
            "category": [rng.choice(CATEGORIES) for _ in range(count)],
            "perplexity": [rng.uniform(2, 80) for _ in range(count)],
            "chosen_score": [rng.random() for _ in range(count)],
            "instruction_safety": [rng.random() for _ in range(count)],
        }
    )


def madef_path(rows: pl.DataFrame) -> dict[str, float]:
    from madef_assets.defs.diversity.dedup import near_duplicates, normalized_texts
    from madef_assets.defs.frames import params_view
    from madef_assets.storage import run_sql

    started = time.perf_counter()
    exact = rows.with_columns(normalized=normalized_texts(pl.col("prompt"))).unique(
        "normalized", keep="first", maintain_order=True
    )
    exact_done = time.perf_counter()
    near = near_duplicates(exact["prompt"].to_list(), THRESHOLD, PERMUTATIONS, SEED)
    kept = exact.filter(pl.Series([n is None for n in near]))
    near_done = time.perf_counter()
    features = kept.with_columns(chosen_response=pl.lit("ok"), better_response=pl.lit(0), scored_as=pl.lit("pair"))
    selected = run_sql("selection/safety_sft_selected", reward_features=features, params=params_view(**SELECTION))
    done = time.perf_counter()
    return {
        "exact": exact_done - started,
        "near": near_done - exact_done,
        "selection": done - near_done,
        "kept": kept.height,
        "selected": selected.height,
    }


def pandas_path(rows: pl.DataFrame) -> dict[str, float]:
    import pandas as pd
    from datasketch import MinHash, MinHashLSH

    frame = rows.to_pandas()
    started = time.perf_counter()
    normalized = frame["prompt"].str.normalize("NFKC").str.lower().str.replace(r"[\W_]+", "", regex=True)
    exact = frame.loc[~normalized.duplicated()].copy()
    exact["normalized"] = normalized[exact.index]
    exact_done = time.perf_counter()
    lsh, signatures, keep = MinHashLSH(threshold=THRESHOLD, num_perm=PERMUTATIONS), [], []
    for index, text in enumerate(exact["normalized"]):
        grams = {text[i : i + 3] for i in range(max(len(text) - 2, 1))}
        signature = MinHash(num_perm=PERMUTATIONS, seed=SEED)
        signature.update_batch([g.encode() for g in grams])
        signatures.append(signature)
        duplicate = any(signatures[int(c)].jaccard(signature) >= THRESHOLD for c in lsh.query(signature))
        keep.append(not duplicate)
        if not duplicate:
            lsh.insert(str(index), signature)
    kept = exact.loc[keep]
    near_done = time.perf_counter()
    # the perplexity cut is taken per language, as in madef's SQL
    ranked = kept.assign(perplexity_rank=kept.groupby("lang")["perplexity"].rank(method="min", pct=True))
    chosen = ranked[
        (ranked["perplexity_rank"] <= SELECTION["perplexity_quantile"])
        & (ranked["chosen_score"] >= SELECTION["min_response_safety"])
        & (ranked["instruction_safety"] <= SELECTION["max_instruction_safety"])
    ]
    chosen = chosen.sort_values(
        ["category", "chosen_score", "perplexity", "prompt_id"], ascending=[True, False, True, True]
    )
    selected = chosen.groupby("category").head(SELECTION["per_category_cap"])
    done = time.perf_counter()
    assert isinstance(selected, pd.DataFrame)
    return {
        "exact": exact_done - started,
        "near": near_done - exact_done,
        "selection": done - near_done,
        "kept": len(kept),
        "selected": len(selected),
    }


def in_child(path_name: str, count: int, results: multiprocessing.Queue) -> None:
    rows = synthetic_rows(count)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings = {"madef": madef_path, "pandas": pandas_path}[path_name](rows)
    timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timings["input_rss_mb"] = baseline_rss / 1024
    results.put(timings)


def measure(path_name: str, count: int) -> dict[str, float]:
    results: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=in_child, args=(path_name, count, results))
    child.start()
    timings = results.get(timeout=3600)
    child.join()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = {}
    for name in ("pandas", "madef"):
        runs = [measure(name, args.rows) for _ in range(args.repeats)]
        table[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"{args.rows} rows, MinHash {PERMUTATIONS} permutations, threshold {THRESHOLD}, median of {args.repeats}\n")
    print(
        "| path | exact dedup s | near dedup s | selection s | total s | kept | selected | peak RSS MB | "
        "total vs pandas |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t in table.items():
        total = t["exact"] + t["near"] + t["selection"]
        baseline = table["pandas"]["exact"] + table["pandas"]["near"] + table["pandas"]["selection"]
        print(
            f"| {name} | {t['exact']:.2f} | {t['near']:.2f} | {t['selection']:.2f} | {total:.2f} | {t['kept']:.0f} | "
            f"{t['selected']:.0f} | {t['peak_rss_mb']:.0f} | {baseline / total:.2f}x |"
        )


if __name__ == "__main__":
    main()
