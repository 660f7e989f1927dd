"""Static and Qt-free checks of the shared Slicer library LiteSegSlicerLib (LiteSegSlicer/): its
CMake install beside the modules, the checkout bootstrap, the widget base, the parameter
bindings, the PyTorch installer guard and the cost of importing it. No Slicer needed: the logics,
the volume bridge, the writer and the self-tests run on slicer-core in the other test files.
"""

import ast
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from slicer_fixtures import LIBRARY_DIR, PATHS_FILE, ROOT

LIBRARY = LIBRARY_DIR / "LiteSegSlicerLib"
WIDGET_FILES = {LIBRARY / "widget.py"}  # the library's only Qt file
MODULE_FILES = (ROOT / "MoNetSegmentation" / "MoNetSegmentation.py", ROOT / "LowResDetect" / "LowResDetect.py")


def imported_modules(path) -> set:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return names


def test_cmake_compiles_every_library_script_into_the_scripted_modules_folder():
    """The build tree and the install get LiteSegSlicerLib beside the module files (the
    scripted-modules lib folder, on sys.path in Slicer), as the engine is."""
    text = (LIBRARY_DIR / "CMakeLists.txt").read_text()
    scripts = {str(p.relative_to(LIBRARY_DIR)) for p in LIBRARY.glob("*.py")}
    assert set(re.findall(r"^\s+(LiteSegSlicerLib/\S+\.py)$", text, re.MULTILINE)) == scripts
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\)", text, re.S).group(1).split()
    assert call[call.index("TARGET_NAME") + 1] == "LiteSegSlicerLib"
    assert call[call.index("SCRIPTS") + 1] == '"${LITESEG_SLICER_PYTHON_SCRIPTS}"'
    assert call[call.index("DESTINATION_DIR") + 1] == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    assert call[call.index("INSTALL_DIR") + 1] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    assert "NO_INSTALL_SUBDIR" in call  # LiteSegSlicerLib/... directly in the lib folder, like liteseg/...
    top = (ROOT / "CMakeLists.txt").read_text()
    assert top.index("add_subdirectory(LiteSegSlicer)") < top.index("add_subdirectory(MoNetSegmentation)")
    assert top.index("add_subdirectory(LiteSegSlicer)") < top.index("add_subdirectory(LowResDetect)")


@pytest.mark.parametrize("module_file", MODULE_FILES, ids=lambda p: p.stem)
def test_module_files_find_the_library_in_a_checkout_through_its_path_module(module_file):
    """Installed or in a build tree the library is beside the module file; in a checkout the
    module file runs <checkout>/LiteSegSlicer/LiteSegSlicerLib/paths.py by its path."""
    text = module_file.read_text()
    assert "import LiteSegSlicerLib  # noqa: F401" in text
    assert ('runpy.run_path(str(Path(__file__).resolve().parents[1] / "LiteSegSlicer" / "LiteSegSlicerLib" / "paths.py"))'
            '["addCheckoutPaths"]()') in text
    assert module_file.resolve().parents[1] / "LiteSegSlicer" / "LiteSegSlicerLib" / "paths.py" == PATHS_FILE


def test_the_path_module_makes_library_and_engine_importable_from_a_bare_python():
    """No site packages (no editable install of the engine): the path module alone finds both."""
    code = (
        f"import runpy, sys; runpy.run_path({str(PATHS_FILE)!r})['addCheckoutPaths'](); "
        "import liteseg, LiteSegSlicerLib; print(liteseg.__file__); print(LiteSegSlicerLib.__file__)"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "liteseg" / "__init__.py"), str(LIBRARY / "__init__.py")]


@pytest.mark.parametrize("path", sorted(p.name for p in LIBRARY.glob("*.py") if p not in WIDGET_FILES))
def test_library_imports_no_qt(path):
    imported = imported_modules(LIBRARY / path)
    assert not {name.split(".")[0] for name in imported} & {"qt", "ctk", "PythonQt"}
    assert not imported & {"slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", ".widget", "LiteSegSlicerLib.widget"}


def test_the_widget_base_follows_the_template():
    tree = ast.parse((LIBRARY / "widget.py").read_text())
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes == {"LiteSegModuleWidget": ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]}
    text = (LIBRARY / "widget.py").read_text()
    assert "slicer.util.tryWithErrorDisplay(self.failureMessage, waitCursor=True)" in text
    assert 'reloadLibraries("LiteSegSlicerLib")' in text and "ScriptedLoadableModuleWidget.onReload(self)" in text


def test_shared_code_is_written_once():
    """The volume bridge, the writer, the engine import, the installer and the process scaffold are
    defined in one place each (no copy in the module files or in another library file)."""
    defined = {}
    for path in [*LIBRARY.glob("*.py"), *MODULE_FILES]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, []).append(path.name)
    for name, home in {"volumeToImage": "volume_bridge.py", "writeSegment": "segmentation_writer.py",
                       "orientedLabelmap": "segmentation_writer.py", "importEngine": "paths.py",
                       "ensureTorch": "dependencies.py", "ProcessRun": "processing.py",
                       "checkOutputSegmentation": "processing.py", "engineMessage": "processing.py",
                       "ModelInfo": "models.py", "parameterWidgets": "parameter_gui.py",
                       "putInStudy": "selftest_common.py", "voxelIndices": "selftest_common.py"}.items():
        assert defined.get(name) == [home], f"{name} defined in {defined.get(name)}"
    assert "_checkOutput" not in defined  # the private helper the detection logic borrowed is gone


def test_parameter_widgets_are_those_with_a_parameter_name():
    from LiteSegSlicerLib.parameter_gui import parameterWidgets

    class Widget:  # what the function reads of a Qt widget: its dynamic properties
        def __init__(self, name=None):
            self.properties = {"SlicerParameterName": name} if name else {}

        def property(self, key):
            return self.properties.get(key)

    ui = type("Ui", (), {})()
    ui.inputSelector, ui.threshold, ui.applyButton = Widget("inputVolume"), Widget("threshold"), Widget()
    ui.layout = object()  # not a widget
    assert parameterWidgets(ui) == {"inputVolume": ui.inputSelector, "threshold": ui.threshold}


def test_one_pytorch_installation_at_a_time():
    from LiteSegSlicerLib import dependencies

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


def test_the_panel_check_refreshes_the_button_and_waits_for_another_installation():
    from LiteSegSlicerLib import dependencies

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


def test_library_import_is_cheap():
    """Importing what the module files import at Slicer start-up (the models, the logics, the
    scaffold, the installer) imports no torch and no SimpleITK."""
    code = (
        f"import runpy, sys; runpy.run_path({str(PATHS_FILE)!r})['addCheckoutPaths'](); "
        "import LiteSegSlicerLib, LiteSegSlicerLib.models as m, LiteSegSlicerLib.segmentation_logic, "
        "LiteSegSlicerLib.detection_logic, LiteSegSlicerLib.processing, LiteSegSlicerLib.dependencies, "
        "LiteSegSlicerLib.parameter_gui, LiteSegSlicerLib.reloading; "
        "print(m.availableDetectorModels(), m.bundledModelNames()); "
        "assert 'torch' not in sys.modules and 'SimpleITK' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
