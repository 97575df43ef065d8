"""The benchmarks: one module each, with a module-level BENCHMARK (madef_assets/defs/evaluation/benchmark.py)."""
