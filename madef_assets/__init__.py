"""madef: safety-alignment data construction and evaluation as Dagster assets on DuckDB."""
