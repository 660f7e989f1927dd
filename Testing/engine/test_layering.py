"""The engine's layering: no import cycle between its modules (imports anywhere in a file, those
inside functions included); argparse, tqdm and printing for users only in the command-line layer
(`liteseg.cli`), which no other layer imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "liteseg"
CLI_PACKAGE = "liteseg.cli"
CLI_ONLY_IMPORTS = {"argparse", "tqdm"}


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


def in_cli_layer(module: str) -> bool:
    return module == CLI_PACKAGE or module.startswith(CLI_PACKAGE + ".")


def external_imports(tree: ast.AST) -> set[str]:
    """Top-level names of the non-liteseg modules a file imports (inside functions too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def calls_print(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print" for n in ast.walk(tree))


def test_argparse_tqdm_and_print_only_in_the_command_line_layer():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if in_cli_layer(name) or name == "liteseg.__main__":
            continue
        tree = ast.parse(path.read_text())
        assert not external_imports(tree) & CLI_ONLY_IMPORTS, f"{name} imports {external_imports(tree) & CLI_ONLY_IMPORTS}"
        assert not calls_print(tree), f"{name} prints: return text or take a callback, the command line prints"


def test_no_library_module_imports_the_command_line_layer():
    for name, targets in graph().items():
        if not in_cli_layer(name) and name != "liteseg.__main__":
            assert not {t for t in targets if in_cli_layer(t)}, f"{name} imports the command line layer"


def test_the_checks_see_what_they_forbid():
    tree = ast.parse("def f():\n    import tqdm\n    from argparse import ArgumentParser\n    print('x')\n")
    assert external_imports(tree) == {"tqdm", "argparse"} and calls_print(tree)
    assert in_cli_layer("liteseg.cli.main") and not in_cli_layer("liteseg.client")
