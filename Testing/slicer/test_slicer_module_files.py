"""Static checks of MoNetSegmentation's files (no Slicer, no Qt needed): the .ui file against the
Python code that uses it (the module file and the shared widget base it subclasses), the parameter
node bindings, CMake lists and the icon. The shared library's own files are checked in
test_liteseg_slicer_library.py, the layering in test_architecture.py.

These read the files; they do not run Qt or the parameter node wrapper (not available outside the
Slicer application). The widget classes each parameter type may bind to are those of Slicer's
parameterNodeWrapper GUI connectors (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py).
"""

import ast
import py_compile
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "MoNetSegmentation"
MODULE_FILE = MODULE_DIR / "MoNetSegmentation.py"
WIDGET_BASE_FILE = ROOT / "LiteSegSlicer" / "LiteSegSlicerLib" / "widget.py"  # LiteSegModuleWidget
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MoNetSegmentation.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / "MoNetSegmentation.png"

# parameter type -> widget classes Slicer's GUI connectors bind it to (exact class match there)
CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "int": {"QSpinBox", "QSlider"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
    "node": {"qMRMLNodeComboBox"},  # Slicer has no connector for qMRMLSubjectHierarchyTreeView
}


def ui_widgets() -> dict:
    """name -> (class, {property: value}) of every widget in the .ui file."""
    widgets = {}
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            value = prop[0]
            if value.tag == "stringlist":
                properties[prop.get("name")] = [s.text for s in value.findall("string")]
            else:
                properties[prop.get("name")] = value.text
        assert element.get("name") not in widgets, f"duplicate widget name {element.get('name')}"
        widgets[element.get("name")] = (element.get("class"), properties)
    return widgets


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def parameter_node_fields() -> dict:
    """name -> annotation source of the @parameterNodeWrapper class."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list
        ):
            return {
                statement.target.id: ast.unparse(statement.annotation)
                for statement in node.body
                if isinstance(statement, ast.AnnAssign)
            }
    raise AssertionError("no @parameterNodeWrapper class in MoNetSegmentation.py")


def base_type(annotation: str) -> str:
    match = re.match(r"Annotated\[(\w+)", annotation)
    name = match.group(1) if match else annotation
    return "node" if name.startswith("vtkMRML") else name


def test_module_file_compiles():
    py_compile.compile(str(MODULE_FILE), doraise=True)


def ui_names_used(path: Path) -> set:
    """The <name> of every self.ui.<name> in a file."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def test_every_ui_widget_the_code_uses_exists():
    used = ui_names_used(MODULE_FILE) | ui_names_used(WIDGET_BASE_FILE)  # the module's widget and its base
    used.discard("__dict__")
    widgets = ui_widgets()
    assert used, "the widget uses no self.ui.<name>?"
    assert sorted(used - set(widgets)) == []
    assert {"applyButton", "progressBar", "statusLabel", "modelSelector", "parametersCollapsibleButton"} <= used


def test_every_parameter_is_bound_to_a_fitting_widget():
    fields = parameter_node_fields()
    assert set(fields) == {"inputVolume", "outputSegmentation", "model", "threshold", "keepLargestComponent",
                           "localizeFirst", "show3D", "allowNonCT"}
    bound = {}
    for name, (cls, properties) in ui_widgets().items():
        parameter = properties.get("SlicerParameterName")
        if parameter:
            assert parameter not in bound, f"{parameter} bound twice"
            bound[parameter] = (name, cls, properties)
    assert sorted(set(fields) - set(bound)) == [], "parameters without a widget"
    assert sorted(set(bound) - set(fields)) == [], "SlicerParameterName naming no parameter"
    for parameter, annotation in fields.items():
        name, cls, properties = bound[parameter]
        assert cls in CONNECTABLE[base_type(annotation)], f"{parameter}: {annotation} cannot bind to {cls} {name}"
        if cls == "QComboBox":
            assert "Choice(" in annotation, f"{parameter}: a QComboBox needs a Choice annotation"
        if cls == "ctkSliderWidget":
            assert "WithinRange(" in annotation, f"{parameter}: a slider needs a bounded range"
        if base_type(annotation) == "node":
            assert properties["nodeTypes"] == [annotation], f"{name} lists {properties['nodeTypes']}"
            assert properties.get("showChildNodeTypes") == "false"


def test_ui_content_of_the_issue():
    widgets = ui_widgets()
    root = ET.parse(UI_FILE).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget"
    cls, output = widgets["outputSelector"]
    assert output["addEnabled"] == "true" and output["noneEnabled"] == "true"  # can create a new node
    assert widgets["applyButton"][1]["text"] == "Segment pancreas"
    cls, localize = widgets["localizeCheckBox"]
    assert localize.get("enabled") != "false" and localize["checked"] == "true"
    assert widgets["progressBar"][0] == "QProgressBar" and widgets["statusLabel"][0] == "QLabel"
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert receivers == {"inputSelector", "outputSelector"}
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {cls for cls, _ in widgets.values() if not cls.startswith("Q")}
    assert custom == declared


def test_module_classes_follow_the_template():
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in module_tree().body if isinstance(node, ast.ClassDef)}
    assert classes["MoNetSegmentation"] == ["ScriptedLoadableModule"]
    assert classes["MoNetSegmentationWidget"] == ["LiteSegModuleWidget"]  # (ScriptedLoadableModuleWidget, VTKObservationMixin)
    assert classes["MoNetSegmentationLogic"] == ["ScriptedLoadableModuleLogic", "SegmentationLogic"]
    assert classes["MoNetSegmentationTest"] == ["ScriptedLoadableModuleTest"]
    # the base loads "UI/<moduleName>.ui", moduleName being the widget class's name less "Widget"
    assert 'self.resourcePath(f"UI/{self.moduleName}.ui")' in WIDGET_BASE_FILE.read_text()
    assert UI_FILE.is_file()  # Resources/UI/MoNetSegmentation.ui: MoNetSegmentationWidget's moduleName


def test_cmake_lists_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "MoNetSegmentation")
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT MoNetSegmentation.py)" in text
    scripts = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    listed = set(re.findall(r"^\s+(\S+\.py)$", text, re.MULTILINE))
    assert listed == scripts
    resources = set(re.findall(r"^\s+(Resources/\S+)$", text, re.MULTILINE))
    assert resources == {"Resources/Icons/MoNetSegmentation.png", "Resources/UI/MoNetSegmentation.ui"}
    assert all((MODULE_DIR / r).is_file() for r in resources)


def test_icon_is_a_128_pixel_png():
    data = ICON_FILE.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


@pytest.mark.parametrize("module_file", [MODULE_FILE, ROOT / "LowResDetect" / "LowResDetect.py"])
def test_widgets_connect_with_a_tag_that_slicer_5_8_returns(module_file):
    """connectGui returns None on Slicer 5.8 (so disconnectGui undoes nothing); the shared widget
    base uses connectParametersToGui, which returns the tag on 5.8 and 5.10, and the module
    widgets inherit that (they bind nothing themselves)."""
    text = WIDGET_BASE_FILE.read_text()
    assert ".connectGui(" not in text
    assert "self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))" in text
    assert "self._parameterNode.disconnectGui(self._parameterNodeGuiTag)" in text
    module = module_file.read_text()
    assert ".connectGui(" not in module and ".connectParametersToGui(" not in module and ".disconnectGui(" not in module
    assert "(LiteSegModuleWidget):" in module


@pytest.mark.parametrize("module_file, button", [
    (MODULE_FILE, "applyButton"),
    (ROOT / "LowResDetect" / "LowResDetect.py", "detectButton")])
def test_the_run_button_is_disabled_while_pytorch_installs(module_file, button):
    text = WIDGET_BASE_FILE.read_text()
    assert "if not self._torchReady():" in text
    assert "return torchReadyForPanel(self.runButton, self.ui.statusLabel, self.updateRunButton, _)" in text
    assert f"self.runButton = self.ui.{button}" in module_file.read_text()  # the module's run button
