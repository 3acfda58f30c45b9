"""genlab's import layers, read from the source (no module is imported): every import points down the layer order
below, and the imports run at import time form no cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "genlab"

# Lowest first. A module may import from its own layer and the layers below it, never from one above.
LAYERS = [
    {"errors", "io", "names", "parser", "arguments"},  # plain Python helpers and the argv tools
    {"models"},
    {"datamodules"},
    {"metrics"},
    {"figures"},
    {"evaluation"},
    {"run_control", "runs", "loggers"},
    {"callbacks"},  # the flat namespace of figures, evaluation and run control
    {"report"},
    {"cli"},
    {"testing", "analysis"},
]
# Imports inside a function that reach up on purpose, with why: (importing module, imported unit).
CALL_TIME_LOOKUPS = {
    ("genlab.names", "models"): "the registry lists genlab's own classes when a flag names none",
    ("genlab.names", "datamodules"): "the registry lists genlab's own classes when a flag names none",
    ("genlab.names", "callbacks"): "the registry lists genlab's own classes when a flag names none",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The genlab modules an import statement loads (`from genlab.x import y` loads genlab.x.y when y is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "genlab"]
    if node.level:
        base = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "genlab":
        return []
    found = [f"{source}.{alias.name}" for alias in node.names if is_module(f"{source}.{alias.name}")]
    return found if found and len(found) == len(node.names) else [source, *found]


def import_edges() -> list[tuple[str, str, bool]]:
    """(importer, imported, at import time) for every import of a genlab module by a genlab module. Importing
    genlab.a.b also runs genlab.a's __init__, an edge of its own for importers outside genlab.a."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported_modules(node, module, path.name == "__init__.py"):
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    parent = ".".join(parts[:depth])
                    if parent == target or not (module + ".").startswith(parent + "."):
                        edges.append((module, parent, id(node) in top_level))
    return [(a, b, at_import) for a, b, at_import in edges if a != b]


def unit(module: str) -> str:
    """The layered unit of a module: its top-level subpackage or module under genlab."""
    return module.split(".")[1] if "." in module else ""


def layer_of(module: str) -> int:
    name = unit(module)
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    raise AssertionError(f"{module} belongs to no layer: add {name!r} to LAYERS in {__file__}")


def upward_imports(edges: list[tuple[str, str, bool]]) -> list[str]:
    """The imports that point up the layer order, less the call-time lookups named in CALL_TIME_LOOKUPS."""
    return [f"{a} imports {b} ({'at import time' if at_import else 'in a function'})" for a, b, at_import in edges
            if b != "genlab" and layer_of(b) > layer_of(a) and (at_import or (a, unit(b)) not in CALL_TIME_LOOKUPS)]


def find_cycle(edges: list[tuple[str, str]]) -> list[str]:
    """One cycle of the directed graph as [a, b, ..., a], or [] when there is none."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_every_unit_has_a_layer():
    units = {unit(module_name(path)) for path in PACKAGE.rglob("*.py")} - {""}
    assert units <= set().union(*LAYERS), f"no layer for {sorted(units - set().union(*LAYERS))}"


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(import_edges()) == []


def test_imports_at_import_time_form_no_cycle():
    assert find_cycle([(a, b) for a, b, at_import in import_edges() if at_import]) == []


def test_call_time_lookups_are_still_needed():
    edges = {(a, unit(b)) for a, b, at_import in import_edges() if not at_import}
    assert set(CALL_TIME_LOOKUPS) <= edges, f"no longer imported: {sorted(set(CALL_TIME_LOOKUPS) - edges)}"


def test_the_checks_see_an_upward_import_and_a_cycle():
    edges = import_edges()
    assert ("genlab.report.page", "genlab.figures.draw", True) in edges  # the parser sees real imports
    assert upward_imports([("genlab.figures.draw", "genlab.report.page", True)]) == \
        ["genlab.figures.draw imports genlab.report.page (at import time)"]
    assert upward_imports([("genlab.names", "genlab.callbacks", False)]) == []
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
