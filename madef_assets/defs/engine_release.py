"""The `gpu.release` policy as Dagster hooks: with `per_asset`, every model engine loaded in the process
is closed when an asset step ends, succeeded or failed, so the next step (another candidate's weights,
training) finds the GPU free. With `per_run` engines stay for the next asset of the run; the CLI closes
them between runs and training closes them before it starts."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetsDefinition, HookContext, failure_hook, success_hook

from madef_assets.llm.engines import ENGINES


def close_engines(context: HookContext) -> None:
    closed = ENGINES.release()
    if closed:
        context.log.info(f"gpu.release per_asset: closed {closed} model engine(s) at the end of {context.op.name}")


@success_hook(name="close_engines_after_success")
def close_engines_after_success(context: HookContext) -> None:
    close_engines(context)


@failure_hook(name="close_engines_after_failure")
def close_engines_after_failure(context: HookContext) -> None:
    close_engines(context)


def with_engine_release(assets: Sequence[AssetsDefinition], policy: str) -> list[AssetsDefinition]:
    if policy != "per_asset":
        return list(assets)
    return [asset.with_hooks({close_engines_after_success, close_engines_after_failure}) for asset in assets]
