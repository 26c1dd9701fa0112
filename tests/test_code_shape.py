"""The package's shape (issue 16): short functions and modules, imports at the top where the
training side lives, no import cycle, and a pickle side that never loads torch."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700
# Modules whose every import sits at the top level: the training side and the feature pipeline.
TOP_LEVEL_IMPORTS = ("models/", "features.py", "clustering.py")
# What the pickle's side must never load (`pipeline.runtime` is pickled by value, `verify_child`
# runs the pickle as Numerai's container does).
PICKLE_SIDE = ("pipeline.runtime", "pipeline.verify_child")
TRAINING_SIDE = ("torch", "pipeline.models", "pipeline.features", "pipeline.clustering")


def modules() -> dict[str, Path]:
    """Dotted module name -> path of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, nested ones included."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((prefix + node.name, node))
            found += functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            found += functions(node, f"{prefix}{node.name}.")
        else:
            found += functions(node, prefix)
    return found


def imports(tree: ast.AST, inside_function: bool = False) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function; `if TYPE_CHECKING:` blocks
    are left out (they never run)."""
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += [item for child in node.orelse for item in imports(child, inside_function)]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, inside_function))
        found += imports(node, inside_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return found


def imported_modules(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    """The package's modules an import statement loads (`from pipeline import x` loads pipeline.x)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        names = {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known and name != "pipeline"}


def import_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The modules of each cycle of `graph`, as sorted tuples (one per strongly connected component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1 or node in graph[node]:
                cycles.add(tuple(sorted(component)))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_function_over_80_lines_and_no_module_over_700() -> None:
    long_functions, long_modules = {}, {}
    for path in modules().values():
        source = path.read_text()
        name = path.relative_to(PACKAGE).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules[name] = len(source.splitlines())
        for qualified, node in functions(ast.parse(source)):
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions[f"{name}:{qualified}"] = node.end_lineno - node.lineno + 1
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines (def to last line): {long_functions}"


def test_the_training_side_imports_only_at_module_top_level() -> None:
    inner = [
        f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno} {ast.unparse(node)}"
        for path in modules().values()
        if path.relative_to(PACKAGE).as_posix().startswith(TOP_LEVEL_IMPORTS)
        for node, inside_function in imports(ast.parse(path.read_text()))
        if inside_function
    ]
    assert not inner, f"imports inside functions: {inner}"


def test_no_import_cycle_between_the_packages_modules() -> None:
    known = modules()
    graph = {
        name: {module for node, _ in imports(ast.parse(path.read_text())) for module in imported_modules(node, known)}
        for name, path in known.items()
    }
    cycles = import_cycles(graph)
    assert not cycles, f"import cycles (imports inside functions included): {cycles}"


def test_the_pickle_side_never_loads_torch_or_the_training_side() -> None:
    probe = (
        "import importlib, json, sys\n"
        f"for name in {list(PICKLE_SIDE)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({TRAINING_SIDE!r}))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_an_installed_package_holds_every_module(tmp_path: Path) -> None:
    """`pip install .` (the README's Dask setup) installs every module: a wheel built from a copy of
    the checkout (an in-tree `build/` would carry an earlier build's files) holds each of `modules()`."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path)], check=True, capture_output=True, cwd=source)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name, path in modules().items() if path.relative_to(PACKAGE.parent).as_posix() not in names]
    assert not missing, f"left out of the wheel: {missing}"
