"""The bundled weights are package data: found through importlib.resources, and shipped by a plain
`pip install .` (a wheel), not only by an editable checkout."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from liteseg.io.modelcard import BUNDLED_MODELS_PACKAGE, DEFAULT_MODEL, bundled_cards, models_dir

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "Resources" / "Models"


def bundled_files() -> list[str]:
    return sorted(p.name for p in BUNDLED.iterdir() if p.is_file())


def test_every_bundled_file_is_declared_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"][BUNDLED_MODELS_PACKAGE] == "Resources/Models"
    patterns = config["package-data"][BUNDLED_MODELS_PACKAGE]
    undeclared = [f for f in bundled_files() if f != "__init__.py" and not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not undeclared, f"files in Resources/Models that a wheel would not ship: {undeclared}"


def test_bundled_models_are_found_as_package_data(monkeypatch):
    monkeypatch.delenv("LITESEG_MODELS", raising=False)
    assert models_dir().resolve() == BUNDLED.resolve()
    assert DEFAULT_MODEL in {card.name for card in bundled_cards()}


def test_a_checkout_on_sys_path_without_install_finds_the_bundled_models(tmp_path):
    """Slicer's module paths put the checkout on sys.path: no pip mapping, the folder itself."""
    script = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {sysconfig.get_paths()['purelib']!r}]; "
              "import importlib.util; assert importlib.util.find_spec('liteseg.bundled_models') is None; "
              "from liteseg.io.modelcard import bundled_cards, models_dir; "
              "print(models_dir()); print(*sorted(c.name for c in bundled_cards()))")
    # -S: no site-packages processing, so the editable install's import hook is absent
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    folder, names = result.stdout.splitlines()
    assert Path(folder) == BUNDLED and DEFAULT_MODEL in names.split()


def test_a_wheel_ships_the_engine_and_every_bundled_file(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "liteseg", source / "liteseg", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BUNDLED, source / "Resources" / "Models", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("liteseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"liteseg/bundled_models/{f}" for f in bundled_files()} <= names
    engine = {p.relative_to(ROOT).as_posix() for p in (ROOT / "liteseg").rglob("*.py")}
    assert engine <= names, f"engine modules missing from the wheel: {sorted(engine - names)}"


def test_slicer_cmake_puts_the_bundled_files_where_pip_does_in_build_tree_and_install():
    """Build-tree self-tests and the installed extension find the models through the same package
    data lookup: CMake copies Resources/Models into `liteseg/bundled_models` beside the compiled engine."""
    text = (ROOT / "CMakeLists.txt").read_text()
    lib = "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    assert "file(GLOB LITESEG_MODEL_FILES LIST_DIRECTORIES false RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} Resources/Models/*)" in text
    assert f"DESTINATION_DIR ${{CMAKE_BINARY_DIR}}/{lib}" in text  # the engine's build copy
    copy = re.search(r"configure_file\(\$\{model_file\} (\S+) COPYONLY\)", text)
    assert copy and copy.group(1) == f"${{CMAKE_BINARY_DIR}}/{lib}/liteseg/bundled_models/${{model_name}}"
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/liteseg/bundled_models" in text
