"""Static checks of the module's files (no Slicer, no Qt needed): the .ui file against the Python
code that uses it, the parameter node bindings, CMake lists and the icon.

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

MODULE_DIR = Path(__file__).resolve().parents[2] / "MoNetSegmentation"
MODULE_FILE = MODULE_DIR / "MoNetSegmentation.py"
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


def test_every_ui_widget_the_code_uses_exists():
    used = {node.attr for node in ast.walk(module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
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
    assert classes["MoNetSegmentationWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["MoNetSegmentationLogic"] == ["ScriptedLoadableModuleLogic", "SegmentationLogic"]
    assert classes["MoNetSegmentationTest"] == ["ScriptedLoadableModuleTest"]
    assert 'self.resourcePath("UI/MoNetSegmentation.ui")' in MODULE_FILE.read_text()


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


@pytest.mark.parametrize("path", sorted(p.name for p in (MODULE_DIR / "MoNetSegmentationLib").glob("*.py")))
def test_library_imports_no_qt(path):
    source = (MODULE_DIR / "MoNetSegmentationLib" / path).read_text()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule"}


@pytest.mark.parametrize("module_file", [MODULE_FILE, MODULE_DIR.parent / "LowResDetect" / "LowResDetect.py"])
def test_widgets_connect_with_a_tag_that_slicer_5_8_returns(module_file):
    """connectGui returns None on Slicer 5.8 (so disconnectGui undoes nothing); the widgets use
    connectParametersToGui, which returns the tag on 5.8 and 5.10."""
    text = module_file.read_text()
    assert ".connectGui(" not in text
    assert "self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))" in text
    assert "self._parameterNode.disconnectGui(self._parameterNodeGuiTag)" in text


def test_parameter_widgets_are_those_with_a_parameter_name():
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from MoNetSegmentationLib.parameter_gui import parameterWidgets

    class Widget:  # what the function reads of a Qt widget: its dynamic properties
        def __init__(self, name=None):
            self.properties = {"SlicerParameterName": name} if name else {}

        def property(self, key):
            return self.properties.get(key)

    ui = type("Ui", (), {})()
    ui.inputSelector, ui.threshold, ui.applyButton = Widget("inputVolume"), Widget("threshold"), Widget()
    ui.layout = object()  # not a widget
    assert parameterWidgets(ui) == {"inputVolume": ui.inputSelector, "threshold": ui.threshold}


def test_the_bundled_models_reach_the_build_tree_as_well_as_the_install():
    """Build-tree self-tests load the bundled models: they are copied where the engine package
    is compiled (the scripted-modules lib folder), not only installed there."""
    text = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert "file(GLOB LITESEG_MODEL_FILES RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} Resources/Models/*)" in text
    assert "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in text  # the engine's build copy
    copy = re.search(r"foreach\(model_file \$\{LITESEG_MODEL_FILES\}\)\s+configure_file\(\$\{model_file\} (\S+) COPYONLY\)", text)
    assert copy and copy.group(1) == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${model_file}"
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/Models" in text


def test_one_pytorch_installation_at_a_time():
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from MoNetSegmentationLib import dependencies

    calls = []

    def install() -> bool:
        calls.append(dependencies.installationRunning())
        calls.append(dependencies.installOnce(lambda: True))  # a second click while pip runs
        return True

    assert dependencies.installOnce(install) is True
    assert calls == [True, False] and not dependencies.installationRunning()

    def failing() -> bool:
        raise OSError("no network")

    with pytest.raises(OSError):
        dependencies.installOnce(failing)
    assert not dependencies.installationRunning()  # a failed installation can be retried


@pytest.mark.parametrize("module_file, button, refresh", [
    (MODULE_FILE, "applyButton", "_updateApplyButton"),
    (MODULE_DIR.parent / "LowResDetect" / "LowResDetect.py", "detectButton", "_updateDetectButton")])
def test_the_run_button_is_disabled_while_pytorch_installs(module_file, button, refresh):
    text = module_file.read_text()
    assert "if not self._torchReady():" in text
    assert f"return torchReadyForPanel(self.ui.{button}, self.ui.statusLabel, self.{refresh}, _)" in text


def test_the_panel_check_refreshes_the_button_and_waits_for_another_installation():
    import sys
    from types import SimpleNamespace

    sys.path.insert(0, str(MODULE_DIR))
    from MoNetSegmentationLib import dependencies

    button, status = SimpleNamespace(enabled=True), SimpleNamespace(text="")
    refreshed = []

    def refresh():
        refreshed.append(button.enabled)
        button.enabled = True

    assert dependencies.torchReadyForPanel(button, status, refresh) is True  # torch is installed here
    assert refreshed == [False] and button.enabled  # disabled during the check, then restored
    seen = []
    dependencies.installOnce(lambda: seen.append(dependencies.torchReadyForPanel(button, status, refresh)) or True)
    assert seen == [False] and status.text == "PyTorch is being installed: wait until it is done"
