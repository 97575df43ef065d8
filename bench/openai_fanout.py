"""LLM fan-out: requests/s of the openai backend (aiohttp and SDK transports), of the same backend called
the way an asset calls it (`LLMResource.generate` on a fresh ledger: lookup, backend, ledger writer) and
of distilabel's OpenAILLM against one local OpenAI-compatible server with a fixed latency, at several
concurrency levels, next to the backend-bound ideal (concurrency / latency); a variant where 20 % of
requests get a 429 with Retry-After. Medians of --repeats runs; the server runs in its own process.
bench/ledger_scale.py measures the asset-level path on ledgers of up to 10M rows.

    .venv/bin/python bench/openai_fanout.py [--requests 2000] [--latency 0.1] [--repeats 3]

distilabel runs from .venv-bench (python -m venv .venv-bench && .venv-bench/bin/pip install distilabel
openai requests); without it its column says "n/a".
"""

import argparse
import json
import multiprocessing
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from madef_assets.llm.openai_backend import OpenAIBackend
from madef_assets.llm.resource import LLMResource
from madef_assets.llm.types import GenerationParams
from madef_assets.secret_hygiene import child_env
from madef_assets.settings import model_from_parts

DISTILABEL_PYTHON = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"
DISTILABEL_CLIENT = Path(__file__).resolve().parent / "distilabel_client.py"


def serve(latency: float, rate_429: float, ports: multiprocessing.Queue) -> None:
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer(latency_s=latency, rate_429=rate_429, retry_after_s=0.05)
    ports.put(server.base_url)
    server.httpd.serve_forever()


def madef_rate(base_url: str, requests: int, concurrency: int, transport: str) -> float:
    backend = OpenAIBackend(
        model="bench",
        base_url=base_url,
        api_key_env=None,
        concurrency=concurrency,
        transport=transport,
        max_retries=8,
        backoff_base_s=0.05,
        backoff_cap_s=1.0,
    )
    prompts = [f"bench prompt {i}" for i in range(requests)]
    started = time.perf_counter()
    results = dict(backend.generate(prompts, GenerationParams(max_new_tokens=8)))
    elapsed = time.perf_counter() - started
    failed = sum(r.status != "ok" for r in results.values())
    assert failed == 0, f"{failed} failed calls"
    return requests / elapsed


def asset_rate(base_url: str, requests: int, concurrency: int) -> float:
    """LLMResource.generate with the aiohttp transport, on a fresh ledger, fresh prompts."""
    with tempfile.TemporaryDirectory() as tmp:
        resource = LLMResource(
            role="bench",
            config=model_from_parts(
                "openai",
                "bench",
                {
                    "base_url": base_url,
                    "api_key_env": None,
                    "concurrency": concurrency,
                    "max_retries": 8,
                    "backoff_base_s": 0.05,
                    "backoff_cap_s": 1.0,
                },
                {"max_new_tokens": 8},
            ),
            duckdb_path=str(Path(tmp) / "ledger.duckdb"),
            models_dir=tmp,
        )
        prompts = [f"bench prompt {i}" for i in range(requests)]
        started = time.perf_counter()
        batch = resource.generate(prompts, "fanout-v1")
        elapsed = time.perf_counter() - started
    assert batch.status_counts() == {"ok": requests}, batch.status_counts()
    return requests / elapsed


def distilabel_rate(base_url: str, requests: int, concurrency: int) -> float | None:
    if not DISTILABEL_PYTHON.exists():
        return None
    out = subprocess.run(
        [str(DISTILABEL_PYTHON), str(DISTILABEL_CLIENT), base_url, str(requests), str(concurrency)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0, result
    return result["rate"]


def median_of(repeats: int, measure) -> float | None:
    values = [measure() for _ in range(repeats)]
    return None if values[0] is None else statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64, 256])
    args = parser.parse_args()
    header = [
        "429 share",
        "conc",
        "requests",
        "ideal",
        "madef aiohttp",
        "madef sdk",
        "asset-level",
        "distilabel",
        "aiohttp/ideal",
        "asset/aiohttp",
        "aiohttp/distilabel",
    ]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for rate_429 in (0.0, 0.2):
        ports: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve, args=(args.latency, rate_429, ports), daemon=True)
        server.start()
        base_url = ports.get(timeout=30)
        try:
            for concurrency in args.concurrency:
                # A serial run takes requests x latency: cap the low-concurrency rows at about 10 s each.
                requests = min(args.requests, max(50, int(10 * concurrency / args.latency)))
                fast = median_of(args.repeats, lambda: madef_rate(base_url, requests, concurrency, "aiohttp"))
                sdk = median_of(args.repeats, lambda: madef_rate(base_url, requests, concurrency, "sdk"))
                asset = median_of(args.repeats, lambda: asset_rate(base_url, requests, concurrency))
                peer = median_of(args.repeats, lambda: distilabel_rate(base_url, requests, concurrency))
                ideal = concurrency / args.latency
                cells = [
                    f"{rate_429:.0%}",
                    concurrency,
                    requests,
                    f"{ideal:.0f}",
                    f"{fast:.1f}",
                    f"{sdk:.1f}",
                    f"{asset:.1f}",
                    "n/a" if peer is None else f"{peer:.1f}",
                    f"{fast / ideal:.2f}",
                    f"{asset / fast:.2f}",
                    "n/a" if peer is None else f"{fast / peer:.2f}",
                ]
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
