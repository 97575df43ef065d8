"""LLM fan-out through the openai backend against a local OpenAI-compatible server with a fixed
latency: requests/s at several concurrency levels next to the ideal (concurrency / latency).

    .venv/bin/python bench/openai_fanout.py [--requests 2000] [--latency 0.1] [--repeats 3]

The server runs in its own process so that it does not share the client's GIL.
"""

import argparse
import multiprocessing
import statistics
import time

from madef_assets.llm.openai_backend import OpenAIBackend
from madef_assets.llm.types import GenerationParams


def serve(latency: float, rate_429: float, ports: multiprocessing.Queue) -> None:
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer(latency_s=latency, rate_429=rate_429, retry_after_s=0.05)
    ports.put(server.base_url)
    server.httpd.serve_forever()


def measure(base_url: str, requests: int, concurrency: int) -> tuple[float, int]:
    backend = OpenAIBackend(model="bench", base_url=base_url, api_key_env=None, concurrency=concurrency,
                            max_retries=8, backoff_base_s=0.05, backoff_cap_s=1.0)
    prompts = [f"bench prompt {i}" for i in range(requests)]
    started = time.perf_counter()
    results = dict(backend.generate(prompts, GenerationParams(max_new_tokens=8)))
    elapsed = time.perf_counter() - started
    failed = sum(r.status != "ok" for r in results.values())
    return requests / elapsed, failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64, 256])
    args = parser.parse_args()
    print(f"{'429 share':>9} {'conc':>5} {'req/s (median)':>15} {'ideal':>8} {'ratio':>6} {'failed':>6}")
    for rate_429 in (0.0, 0.2):
        ports: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve, args=(args.latency, rate_429, ports), daemon=True)
        server.start()
        base_url = ports.get(timeout=30)
        try:
            for concurrency in args.concurrency:
                # Serial runs would take requests * latency; cap them so one row stays under a minute.
                requests = min(args.requests, max(50, int(30 * concurrency / args.latency)))
                runs = [measure(base_url, requests, concurrency) for _ in range(args.repeats)]
                rate = statistics.median(r for r, _ in runs)
                ideal = concurrency / args.latency
                print(f"{rate_429:>9.0%} {concurrency:>5} {rate:>15.1f} {ideal:>8.0f} {rate / ideal:>6.2f} {max(f for _, f in runs):>6}")
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
