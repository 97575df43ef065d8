"""The ledger at scale: for ledgers of 0, 100k, 1M and 10M rows, the cost of one flush, a 200k-key lookup
(keys written together, as a re-run asks for them, and keys drawn at random), the file size, and the
asset-level fan-out — `LLMResource.generate` as an asset calls it (ledger lookup, backend, writer thread)
— next to the bare backend it wraps, both against the same local OpenAI-compatible server (fixed latency,
its own process), interleaved, medians of --repeats.

    .venv/bin/python bench/ledger_scale.py [--sizes 0 100000 1000000 10000000] [--requests 2000]
        [--concurrency 64] [--latency 0.1] [--repeats 3] [--dir /tmp/ledger_scale]

Ledger rows are synthetic but sized like real ones (prompt ~400, output ~500 characters, hex noise so
they do not compress away); the 10M ledger takes a few minutes to build and ~4 GB of disk.
"""

import argparse
import hashlib
import multiprocessing
import random
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from madef_assets.llm.ledger import FLUSH_ROWS, Ledger
from madef_assets.llm.resource import LLMResource
from madef_assets.llm.types import GenerationParams
from madef_assets.settings import model_from_parts

TEMPLATE = "ledger-scale-v1"
PARAMS = {"max_new_tokens": 8}


def serve(latency: float, ports: multiprocessing.Queue) -> None:
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer(latency_s=latency)
    ports.put(server.base_url)
    server.httpd.serve_forever()


def build_ledger(path: Path, rows: int) -> float:
    """Seconds to fill a fresh ledger with `rows` synthetic rows, keyed as sha256 of the row number."""
    started = time.perf_counter()
    Ledger(path)
    with duckdb.connect(str(path)) as connection:
        for start in range(0, rows, 1_000_000):
            connection.execute(
                f"""INSERT INTO llm_ledger
                SELECT k, ('0x' || substr(k, 1, 16))::UBIGINT, 'judge', 'generate', 'openai', '{{"model":"m"}}',
                    'v1', '{{}}', 'Question ' || i || ': ' || repeat(md5(i::VARCHAR) || ' ', 11),
                    'Answer: ' || repeat(md5((i + 1)::VARCHAR) || ' ', 15), 'ok', NULL, 120, 90, 0.8, 'bench', now()
                FROM (SELECT i, sha256(i::VARCHAR) AS k FROM range({start}, {min(rows, start + 1_000_000)}) t(i))"""
            )
    return time.perf_counter() - started


def flush_ms(ledger: Ledger, flushes: int = 9) -> float:
    """Median milliseconds of one writer flush (FLUSH_ROWS rows, its own connection)."""
    times = []
    for flush in range(flushes):
        rows = [
            {
                "key": hashlib.sha256(f"flush {flush} {i} {random.random()}".encode()).hexdigest(),
                "role": "judge",
                "kind": "generate",
                "backend": "openai",
                "model": "{}",
                "template_version": "v1",
                "params": "{}",
                "prompt": "p" * 400,
                "output": "o" * 500,
                "status": "ok",
                "error": None,
                "prompt_tokens": 120,
                "completion_tokens": 90,
                "latency_s": 0.8,
                "run_id": "bench",
            }
            for i in range(FLUSH_ROWS)
        ]
        started = time.perf_counter()
        ledger.write(rows)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def lookup_seconds(ledger: Ledger, row_numbers: list[int]) -> tuple[float, int]:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in row_numbers]
    started = time.perf_counter()
    found = ledger.lookup(keys)
    return time.perf_counter() - started, len(found)


def fanout(base_url: str, path: Path, requests: int, concurrency: int, repeats: int, tag: str) -> tuple[float, float]:
    """Median rows/s of the bare backend and of LLMResource.generate (fresh prompts every time, so every
    call goes to the backend and into the ledger)."""
    resource = LLMResource(
        role="judge",
        config=model_from_parts(
            "openai",
            "bench",
            {"base_url": base_url, "api_key_env": None, "concurrency": concurrency, "max_retries": 8},
            PARAMS,
        ),
        duckdb_path=str(path),
        models_dir=str(path.parent),
    )
    backend = resource.get_backend()
    bare, asset = [], []
    for repeat in range(repeats):
        prompts = [f"{tag} bare {repeat} prompt {i}" for i in range(requests)]
        started = time.perf_counter()
        results = list(backend.generate(prompts, GenerationParams.from_config(PARAMS)))
        bare.append(requests / (time.perf_counter() - started))
        assert len(results) == requests and all(c.status == "ok" for _, c in results)
        prompts = [f"{tag} asset {repeat} prompt {i}" for i in range(requests)]
        started = time.perf_counter()
        batch = resource.generate(prompts, TEMPLATE)
        asset.append(requests / (time.perf_counter() - started))
        assert batch.backend_calls == requests and batch.status_counts() == {"ok": requests}
    again = resource.generate(prompts, TEMPLATE)  # the last asset call once more: all from the ledger
    assert again.backend_calls == 0 and again.cache_hits == requests
    return statistics.median(bare), statistics.median(asset)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lookup-keys", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the ledgers are built (default: a temp dir)")
    args = parser.parse_args()
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(args.latency, ports), daemon=True)
    server.start()
    base_url = ports.get(timeout=30)
    ideal = args.concurrency / args.latency
    print(
        f"{args.requests} fresh prompts per fan-out, concurrency {args.concurrency}, {args.latency * 1000:.0f} ms "
        f"per call (ideal {ideal:.0f} rows/s), medians of {args.repeats}; lookups of {args.lookup_keys} keys\n"
    )
    header = [
        "ledger rows",
        "file MB",
        "flush ms",
        "lookup s (written together)",
        "lookup s (random)",
        "bare rows/s",
        "asset rows/s",
        "asset/bare",
        "asset/ideal",
    ]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    try:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            for size in args.sizes:
                path = Path(tmp) / f"ledger_{size}.duckdb"
                build_ledger(path, size)
                ledger = Ledger(path)
                flush = flush_ms(ledger)
                count = min(args.lookup_keys, size)
                start = random.randrange(0, size - count + 1)
                together, found_together = lookup_seconds(ledger, list(range(start, start + count)))
                spread, found_spread = lookup_seconds(ledger, random.sample(range(size), count))
                assert found_together == found_spread == count, (found_together, found_spread, count)
                bare, asset = fanout(base_url, path, args.requests, args.concurrency, args.repeats, f"size {size}")
                cells = [
                    f"{size:,}",
                    f"{path.stat().st_size / 1e6:.0f}",
                    f"{flush:.1f}",
                    f"{together:.2f}" if count else "n/a",
                    f"{spread:.2f}" if count else "n/a",
                    f"{bare:.0f}",
                    f"{asset:.0f}",
                    f"{asset / bare:.2f}",
                    f"{asset / ideal:.2f}",
                ]
                print("| " + " | ".join(cells) + " |", flush=True)
                path.unlink()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
