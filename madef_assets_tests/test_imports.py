"""No import circles among madef's modules, counting the imports inside functions (a deferred import is
still a dependency: it only hides the circle until the function runs)."""

import ast
from pathlib import Path

from madef_assets.project import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "madef_assets"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], root: Path) -> set[str]:
    """The madef modules a file imports anywhere in it (`from a.b import c` counts a.b, and a.b.c if c is a
    module)."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return (found & known) - {module_name(path, root)}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files, root = sorted(package.rglob("*.py")), package.parent
    known = {module_name(path, root) for path in files}
    return {module_name(path, root): imported_modules(path, known, root) for path in files}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in order:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], order[successor])
        if low[node] == order[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(found)


def test_circles_are_found_through_deferred_imports():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_relative_and_deferred_imports_are_edges(tmp_path):
    package = tmp_path / "madef_assets"
    (package / "llm").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "llm" / "__init__.py").write_text("")
    (package / "llm" / "one.py").write_text("def f():\n    from . import two\n")
    (package / "llm" / "two.py").write_text("from madef_assets.llm.one import f\n")
    graph = import_graph(package)
    assert graph["madef_assets.llm.one"] == {"madef_assets.llm", "madef_assets.llm.two"}
    assert circles(graph) == [["madef_assets.llm.one", "madef_assets.llm.two"]]


def test_madef_has_no_import_circle():
    assert circles(import_graph()) == []


# The stages in the order data flows through them (the qualification measures the labeler and the judge the
# stages before it use). A stage imports from earlier stages and from the shared layers, never from a later
# one; a shared module of madef_assets/defs/ (frames, panel, verdicts, text, ...) imports from no stage.
STAGES = (
    "sources",
    "intent",
    "diversity",
    "responses",
    "reward",
    "qualification",
    "selection",
    "training",
    "evaluation",
)
WIRING = {"madef_assets.defs.automation"}  # builds the sensors from every stage's assets, as definitions.py does


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[2]) if len(parts) > 2 and parts[1] == "defs" and parts[2] in STAGES else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        shared = module.startswith("madef_assets.defs.") and module.count(".") == 2 and module not in WIRING
        here = -1 if shared else stage_of(module)
        found += [
            f"{module} -> {target}"
            for target in sorted(imported)
            if here is not None and stage_of(target) is not None and stage_of(target) > here
        ]
    return found


def test_an_import_from_a_later_stage_is_found():
    graph = {
        "madef_assets.defs.intent.assets": {"madef_assets.defs.sources.assets", "madef_assets.defs.reward.scores"},
        "madef_assets.defs.panel": {"madef_assets.defs.verdicts", "madef_assets.defs.sources.normalize"},
        "madef_assets.definitions": {"madef_assets.defs.evaluation.assets"},
    }
    assert upward_imports(graph) == [
        "madef_assets.defs.intent.assets -> madef_assets.defs.reward.scores",
        "madef_assets.defs.panel -> madef_assets.defs.sources.normalize",
    ]


def test_no_stage_imports_from_a_later_one():
    assert upward_imports(import_graph()) == []
