"""The engine's layering: no import cycle between its modules (imports anywhere in a file, those
inside functions included), and argparse only in the command-line modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "liteseg"
CLI_MODULES = {"liteseg.cli.main", "liteseg.cli.detect", "liteseg.cli.train", "liteseg.cli.train_lowres"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """liteseg modules imported anywhere in the file at `path` (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            if target.startswith("liteseg"):
                candidates = [f"{target}.{alias.name}" for alias in node.names]
                found.update(c for c in candidates if (PACKAGE.parent / (c.replace(".", "/") + ".py")).is_file())
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("liteseg"))
    return found - {name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports(path) if t in modules} for name, path in modules.items()}


def test_no_import_cycle_between_engine_modules():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for child in sorted(edges[node]):
            if state.get(child) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(child):] + [child]))
            if child not in state:
                visit(child)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_argparse_only_in_the_command_line_modules():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        uses = any(isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names) for n in ast.walk(tree))
        assert not uses or module_name(path) in CLI_MODULES, f"{module_name(path)} imports argparse"
