"""The layering of the Slicer side, read from the sources (no Slicer needed):

- one file edits `sys.path`: LiteSegSlicer/LiteSegSlicerLib/paths.py (the checkout bootstrap);
- Qt (`qt`, `ctk`, `PythonQt`, Slicer's Qt-based `ScriptedLoadableModule` / `parameterNodeWrapper`,
  `slicer.qMRML...` / `slicer.qSlicer...` widgets) only in widget files: the two module files and
  the library's widget base;
- neither module imports the other (nor a library of the other: there is one shared library),
  the shared library imports no module, and its segmentation part and its detection part do not
  import each other (both use the shared files: processing, models, writer, bridge, selftest_common);
- the module files hold the Slicer template's classes only (module, parameter node, widget,
  logic, test), no functions of their own.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "LiteSegSlicer" / "LiteSegSlicerLib"
MODULES = ("MoNetSegmentation", "LowResDetect")
PATH_MODULE = LIBRARY / "paths.py"
WIDGET_FILES = {ROOT / m / f"{m}.py" for m in MODULES} | {LIBRARY / "widget.py"}
SEGMENTATION_PART = {"segmentation_logic", "segmentation_selftest"}  # MoNetSegmentation's
DETECTION_PART = {"detection_logic", "detection_outputs", "detection_selftest"}  # LowResDetect's
QT_MODULES = {"qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}

SLICER_SIDE = sorted(
    p for folder in (*MODULES, "LiteSegSlicer", "Testing/slicer") for p in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in p.parts
)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import; module is absolute, or '.<module>' for a relative one."""
    found = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(module, alias.name) for alias in node.names]
    return found


def sys_path_edits(path: Path) -> list[int]:
    """Lines that change sys.path: its methods called, assigned or augmented, `from sys import
    path`, site.addsitedir."""
    lines = []

    def is_sys_path(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) and node.value.id == "sys"

    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if is_sys_path(node.func.value) and node.func.attr in {"insert", "append", "extend", "remove", "pop", "clear"}:
                lines.append(node.lineno)
            if node.func.attr == "addsitedir":
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                    lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_the_scan_sees_the_slicer_side():
    names = {rel(p) for p in SLICER_SIDE}
    assert {"MoNetSegmentation/MoNetSegmentation.py", "LowResDetect/LowResDetect.py",
            "LiteSegSlicer/LiteSegSlicerLib/paths.py", "LiteSegSlicer/LiteSegSlicerLib/widget.py"} <= names
    assert sys_path_edits(PATH_MODULE), "the path module edits sys.path, and the scan sees it"


def test_only_the_path_module_edits_sys_path():
    edits = {rel(p): sys_path_edits(p) for p in SLICER_SIDE if p != PATH_MODULE}
    assert {name: lines for name, lines in edits.items() if lines} == {}


def test_the_path_module_imports_nothing_of_the_library():
    """It runs before the library is importable (by its path, from a module file)."""
    assert {module for module, _ in imports(PATH_MODULE)} <= {"__future__", "importlib.util", "sys", "pathlib", "liteseg"}


@pytest.mark.parametrize("path", [p for p in SLICER_SIDE if p not in WIDGET_FILES], ids=rel)
def test_qt_only_in_widget_files(path):
    qt = [f"{module} {name}".strip() for module, name in imports(path)
          if module in QT_MODULES or module.split(".")[0] in {"qt", "ctk", "PythonQt"}
          or name.startswith(("qMRML", "qSlicer")) or module.startswith(("slicer.qMRML", "slicer.qSlicer"))
          or module in {".widget", "LiteSegSlicerLib.widget"}]
    widgets = [node.attr for node in ast.walk(tree(path)) if isinstance(node, ast.Attribute)
               and isinstance(node.value, ast.Name) and node.value.id == "slicer" and node.attr.startswith(("qMRML", "qSlicer"))]
    assert (qt, widgets) == ([], [])


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_neither_the_other_module_nor_its_library(module):
    other = next(m for m in MODULES if m != module)
    for path in (ROOT / module).rglob("*.py"):
        imported = {name.split(".")[0] for name, _ in imports(path)}
        assert not imported & {other, f"{other}Lib", f"{module}Lib"}, f"{rel(path)} imports {imported & {other, f'{other}Lib'}}"
    assert not list((ROOT / module).glob("*Lib")), "the module's library is the shared LiteSegSlicerLib"


def test_the_library_imports_no_module_and_its_parts_not_each_other():
    for path in LIBRARY.glob("*.py"):
        imported = {module.lstrip(".").replace("LiteSegSlicerLib.", "") for module, _ in imports(path)}
        imported |= {name for module, name in imports(path) if module in {".", "LiteSegSlicerLib"}}
        assert not {name.split(".")[0] for name in imported} & {*MODULES, *(f"{m}Lib" for m in MODULES)}, rel(path)
        if path.stem in SEGMENTATION_PART:
            assert not imported & DETECTION_PART, f"{rel(path)} imports {imported & DETECTION_PART}"
        if path.stem in DETECTION_PART:
            assert not imported & SEGMENTATION_PART, f"{rel(path)} imports {imported & SEGMENTATION_PART}"


@pytest.mark.parametrize("module", MODULES)
def test_module_files_hold_the_template_classes_only(module):
    body = tree(ROOT / module / f"{module}.py").body
    classes = [node.name for node in body if isinstance(node, ast.ClassDef)]
    assert classes == [module, f"{module}ParameterNode", f"{module}Widget", f"{module}Logic", f"{module}Test"]
    functions = [node.name for node in body if isinstance(node, ast.FunctionDef)]
    assert functions == []
