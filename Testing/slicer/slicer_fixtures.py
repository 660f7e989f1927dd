"""Fixtures of the LiteSeg Slicer tests (both modules and their shared library LiteSegSlicerLib),
run against Slicer's real non-Qt core.

`slicer` here is the `slicer-core` wheel (pip install slicer-core): Slicer's MRML scene, nodes,
module logics, readers and writers, without Qt. Test modules that need it start with
`pytest.importorskip("slicer", ...)`, so that without the wheel they are skipped with the reason;
in CI (`CI` set), where it is installed, a missing wheel fails `test_slicer_core_is_installed_in_ci`.

This is not a conftest.py on purpose: Testing/engine's tests do `from conftest import ...`, and a
second conftest module would shadow theirs when both folders run in one pytest session. Test
modules import the fixtures they use from here.
"""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LIBRARY_DIR = ROOT / "LiteSegSlicer"  # holds LiteSegSlicerLib, the Slicer-side library
PATHS_FILE = LIBRARY_DIR / "LiteSegSlicerLib" / "paths.py"

# As a module file does in a checkout: the library's path module, run by its path, puts the
# library (and the engine, when not installed) on sys.path.
runpy.run_path(str(PATHS_FILE))["addCheckoutPaths"]()


@pytest.fixture()
def core():
    """A fresh Slicer core (scene, application logic, module logics) per test; the test fails if
    VTK reported an error or a warning during it."""
    from slicer_harness import SlicerCore

    core = SlicerCore()
    yield core
    messages = core.vtkMessages()
    core.close()
    assert "ERROR" not in messages and "Warning" not in messages, f"VTK reported:\n{messages}"


@pytest.fixture()
def data_root() -> Path:
    """The shared real-data folder ($LITESEG_DATA); skipped when absent, except in CI."""
    from liteseg.io.data import data_root as root

    from LiteSegSlicerLib.segmentation_selftest import REAL_CT

    folder = root()
    if not (folder / REAL_CT).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {folder / REAL_CT} (set LITESEG_DATA)")
        pytest.skip(f"real data folder not found: {folder} (set LITESEG_DATA to run this test)")
    return folder


@pytest.fixture()
def bundled_model():
    """The bundled default model's card; skipped when its weights are not there yet, except in CI."""
    from liteseg.io.modelcard import DEFAULT_MODEL, bundled_cards

    cards = [card for card in bundled_cards() if card.name == DEFAULT_MODEL and card.weights_path.is_file()]
    if not cards:
        if os.environ.get("CI"):
            pytest.fail(f"bundled model {DEFAULT_MODEL} missing in CI")
        pytest.skip(f"bundled model {DEFAULT_MODEL} not in Resources/Models yet")
    return cards[0]


def _required(condition: bool, what: str) -> None:
    """Skip the test when `what` is missing, except in CI, where it fails."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{what} missing in CI")
        pytest.skip(f"{what} not found")


@pytest.fixture()
def bundled_lowres_model():
    """The bundled LowRes model's card (skipped when none is bundled, except in CI)."""
    from liteseg.detection.lowres import LOWRES_NETWORK
    from liteseg.io.modelcard import bundled_cards

    cards = [card for card in bundled_cards() if card.network == LOWRES_NETWORK and card.weights_path.is_file()]
    _required(len(cards) == 1, "one bundled LowRes model in Resources/Models")
    return cards[0]


@pytest.fixture()
def deeplesion_root() -> Path:
    """The shared real-data folder holding the DeepLesion slab of LowResDetect's self-test."""
    from liteseg.io.data import data_root as root

    from LiteSegSlicerLib.detection_selftest import REAL_SLAB

    _required((root() / REAL_SLAB).is_file(), f"real data {root() / REAL_SLAB} (set LITESEG_DATA)")
    return root()


@pytest.fixture()
def random_monet_card(tmp_path):
    """A model card with an untrained MoNet (real weights file, checksum), in tmp_path/models."""
    import torch

    from liteseg.io.labels import PANCREAS_LABEL
    from liteseg.io.modelcard import ModelCard, sha256_file
    from liteseg.models import build_model
    from liteseg.segmentation.preprocessing import Preprocessing

    torch.manual_seed(0)
    folder = tmp_path / "models"
    folder.mkdir()
    weights = folder / "random_monet.pt"
    torch.save(build_model("monet").state_dict(), weights)
    data = {
        "name": "random-monet", "version": "0.0.1", "network": "monet", "weights": weights.name,
        "sha256": sha256_file(weights),
        "input": {"preprocessing": Preprocessing(slice_size=(64, 64)).to_dict()},
        "output": {"activation": "sigmoid", "threshold": 0.5},
        "labels": [PANCREAS_LABEL],
    }
    card = weights.with_suffix(".json")
    card.write_text(json.dumps(data))
    return ModelCard.read(card)
