"""Static checks of LowResDetect's files (no Slicer, no Qt needed): the .ui file against the
Python code that uses it (the module file and the shared widget base it subclasses), the parameter
node bindings, CMake lists and the icon, as test_slicer_module_files.py does for MoNetSegmentation.

The widget classes each parameter type may bind to are those of Slicer's parameterNodeWrapper GUI
connectors (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py); pathlib.Path binds to a
ctkPathLineEdit there.
"""

import ast
import py_compile
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "LowResDetect"
MODULE_FILE = MODULE_DIR / "LowResDetect.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LowResDetect.ui"
ICON_FILE = MODULE_DIR / "Resources" / "Icons" / "LowResDetect.png"
WIDGET_BASE_FILE = ROOT / "LiteSegSlicer" / "LiteSegSlicerLib" / "widget.py"  # LiteSegModuleWidget

CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "int": {"QSpinBox", "QSlider"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
    "pathlib.Path": {"ctkPathLineEdit"},
    "node": {"qMRMLNodeComboBox"},  # Slicer has no connector for qMRMLSubjectHierarchyTreeView
}


def ui_widgets() -> dict:
    """name -> (class, {property: value}) of every widget in the .ui file."""
    widgets = {}
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            value = prop[0]
            properties[prop.get("name")] = [s.text for s in value.findall("string")] if value.tag == "stringlist" else value.text
        assert element.get("name") not in widgets, f"duplicate widget name {element.get('name')}"
        widgets[element.get("name")] = (element.get("class"), properties)
    return widgets


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def parameter_node_fields() -> dict:
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in LowResDetect.py")


def base_type(annotation: str) -> str:
    match = re.match(r"Annotated\[([\w.]+)", annotation)
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
    widgets = ui_widgets()
    assert sorted(used - set(widgets)) == []
    assert {"detectButton", "progressBar", "statusLabel", "resultsTableView", "parametersCollapsibleButton", "modelPathLineEdit"} <= used


def test_every_parameter_is_bound_to_a_fitting_widget():
    fields = parameter_node_fields()
    assert set(fields) == {"inputVolume", "model", "threshold", "margin", "allowNonCT", "outputSegmentation", "outputTable"}
    assert fields["model"] == "Annotated[str, Choice(detectorChoices())]"
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
        if cls in ("ctkSliderWidget", "QSpinBox"):
            assert "WithinRange(" in annotation, f"{parameter}: a bounded widget needs a bounded range"
            low, high = re.search(r"WithinRange\(([\d.]+), ([\d.]+)\)", annotation).groups()
            assert float(properties["minimum"]) == float(low) and float(properties["maximum"]) == float(high)
        if base_type(annotation) == "node":
            assert properties["nodeTypes"] == [annotation], f"{name} lists {properties['nodeTypes']}"
            assert properties.get("showChildNodeTypes") == "false"


def test_ui_content_of_the_issue():
    widgets = ui_widgets()
    root = ET.parse(UI_FILE).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget"
    for output in ("outputSegmentationSelector", "outputTableSelector"):
        properties = widgets[output][1]
        assert properties["addEnabled"] == "true" and properties["noneEnabled"] == "true"  # can create a new node
    assert widgets["detectButton"][1]["text"] == "Detect"
    assert widgets["progressBar"][0] == "QProgressBar" and widgets["statusLabel"][0] == "QLabel"
    assert widgets["resultsTableView"][0] == "qMRMLTableView"
    assert widgets["modelPathLineEdit"][1]["nameFilters"] == ["LowRes model card (*.json)"]
    # the path field is read on Detect, never bound: CTK emits no change when it is emptied
    assert "SlicerParameterName" not in widgets["modelPathLineEdit"][1]
    assert widgets["modelComboBox"][0] == "QComboBox"
    assert float(widgets["thresholdSliderWidget"][1]["value"]) == 0.5 and widgets["marginSpinBox"][1]["value"] == "1"
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert receivers == {"inputSelector", "outputSegmentationSelector", "outputTableSelector", "resultsTableView"}
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {cls for cls, _ in widgets.values() if not cls.startswith("Q")}
    assert custom == declared


def test_widget_wiring():
    text = MODULE_FILE.read_text()
    base = WIDGET_BASE_FILE.read_text()
    assert 'self.resourcePath(f"UI/{self.moduleName}.ui")' in base and UI_FILE.is_file()  # LowResDetectWidget: UI/LowResDetect.ui
    assert "self.runButton = self.ui.detectButton" in text
    assert 'self.runButton.connect("clicked(bool)", self.onRunButton)' in base
    assert 'self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onTableClicked)' in text
    assert "detectionRow(table, self.ui.resultsTableView.sortFilterProxyModel().mapToSource(index).row())" in text
    assert "self.logic.jumpToDetection(table, row)" in text


def test_module_classes_follow_the_template():
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in module_tree().body if isinstance(node, ast.ClassDef)}
    assert classes["LowResDetect"] == ["ScriptedLoadableModule"]
    assert classes["LowResDetectWidget"] == ["LiteSegModuleWidget"]  # (ScriptedLoadableModuleWidget, VTKObservationMixin)
    assert classes["LowResDetectLogic"] == ["ScriptedLoadableModuleLogic", "DetectionLogic"]
    assert classes["LowResDetectTest"] == ["ScriptedLoadableModuleTest"]


def test_cmake_lists_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "LowResDetect")
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT LowResDetect.py)" in text
    scripts = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert set(re.findall(r"^\s+(\S+\.py)$", text, re.MULTILINE)) == scripts
    resources = set(re.findall(r"^\s+(Resources/\S+)$", text, re.MULTILINE))
    assert resources == {"Resources/Icons/LowResDetect.png", "Resources/UI/LowResDetect.ui"}
    assert all((MODULE_DIR / r).is_file() for r in resources)


def test_icon_is_a_128_pixel_png():
    data = ICON_FILE.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
