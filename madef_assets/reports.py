"""Charts written as PNG files for asset metadata."""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl


def stacked_bar_png(
    frame: pl.DataFrame, index: str, stack: str, value: str, title: str, path: Path, stack_order: tuple[str, ...] = ()
) -> Path:
    """A horizontal stacked bar chart (one bar per `index`, one colour per `stack`, stacks in
    `stack_order` first) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = frame.pivot(on=stack, index=index, values=value, aggregate_function="sum").fill_null(0).sort(index)
    present = [c for c in pivot.columns if c != index]
    stacks = [c for c in stack_order if c in present] + sorted(c for c in present if c not in stack_order)
    figure, axis = plt.subplots(figsize=(10, 0.5 * max(pivot.height, 4) + 1.5))
    left = [0] * pivot.height
    colours = plt.get_cmap("tab20")
    for number, name in enumerate(stacks):
        values = pivot[name].to_list()
        axis.barh(pivot[index].to_list(), values, left=left, label=name, color=colours(number % 20))
        left = [a + b for a, b in zip(left, values)]
    axis.set_title(title)
    axis.set_xlabel(value)
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# Chinese labels need a CJK font; matplotlib falls back along the installed ones glyph by glyph (DejaVu: Latin).
CJK_FONTS = ["Noto Sans CJK SC", "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei", "DejaVu Sans"]


def bar_png(
    frame: pl.DataFrame, label: str, value: str, colour: str, title: str, path: Path, colour_order: tuple[str, ...] = ()
) -> Path:
    """A horizontal bar chart, one bar per row in frame order (the first on top), coloured by `colour` (e.g. the
    category a raw label maps to; null: grey), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    present = set(frame[colour].drop_nulls())
    groups = [c for c in colour_order if c in present] + sorted(present - set(colour_order))
    palette = plt.get_cmap("tab20")
    colours = {group: palette(number % 20) for number, group in enumerate(groups)}
    with plt.rc_context({"font.sans-serif": [f for f in CJK_FONTS if f in installed] or ["DejaVu Sans"]}):
        figure, axis = plt.subplots(figsize=(9, 0.35 * max(frame.height, 4) + 1.5))
        names, values, groups_of = frame[label].to_list(), frame[value].to_list(), frame[colour].to_list()
        axis.barh(range(frame.height), values, color=[colours.get(g, "lightgrey") for g in groups_of])
        axis.set_yticks(range(frame.height), names, fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title)
        axis.set_xlabel(value)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in groups]
        axis.legend(
            handles + [plt.Rectangle((0, 0), 1, 1, color="lightgrey")],
            groups + ["unmapped"],
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
        )
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)
    return path


def markdown_image(path: Path) -> str:
    """Markdown that shows a PNG inline in the Dagster UI's metadata panel."""
    return f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def line_png(frame: pl.DataFrame, x: str, y: str, title: str, path: Path) -> Path:
    """A line chart of y over x saved as PNG (e.g. the training loss per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(frame[x].to_list(), frame[y].to_list(), marker="o", markersize=3)
    axis.set_title(title)
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def lines_png(frame: pl.DataFrame, x: str, ys: dict[str, str], title: str, path: Path, ylabel: str = "") -> Path:
    """Several series over one x axis in one PNG (e.g. train and eval loss per step): `ys` maps a column
    to its legend label; each series skips its nulls, so a sparsely logged one still draws as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    for column, label in ys.items():
        points = frame.select(x, column).drop_nulls()
        if points.height:
            axis.plot(points[x].to_list(), points[column].to_list(), marker="o", markersize=3, label=label)
    axis.set_title(title)
    axis.set_xlabel(x)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def per_value(table: pl.DataFrame, column: str) -> dict[str, int]:
    """Rows per value of a column (a missing value counts as "none"), for metadata."""
    counts = table.group_by(column).len().sort(column).iter_rows()
    return {"none" if value is None else str(value): int(count) for value, count in counts}


def markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())


def heatmap_png(
    matrix: list[list[int]],
    rows: list[str],
    columns: list[str],
    title: str,
    path: Path,
    row_title: str = "",
    column_title: str = "",
) -> Path:
    """A matrix of counts as a heat map with every cell's count written in it (e.g. a confusion matrix:
    rows gold, columns predicted), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(0.55 * len(columns) + 2.5, 0.5 * len(rows) + 2))
    image = axis.imshow(matrix, cmap="Blues", aspect="auto")
    largest = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axis.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if largest and count > largest / 2 else "black",
            )
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(rows)), rows, fontsize=8)
    axis.set_xlabel(column_title)
    axis.set_ylabel(row_title)
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
