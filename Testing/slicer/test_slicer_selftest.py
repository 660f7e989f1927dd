"""The module's self-test body (MoNetSegmentationTest in Slicer) run through the same harness."""

import pytest

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import core, data_root, bundled_model  # noqa: E402,F401  (pytest fixtures)

from LiteSegSlicerLib import segmentation_selftest as selftest  # noqa: E402


def test_self_test_geometry_on_synthetic_volumes(core):
    counts = selftest.runGeometrySelfTest(core.scene, log=lambda message: None)
    assert set(counts) == set(selftest.GEOMETRIES) and min(counts.values()) > 200


def test_self_test_bundled_model_on_a_synthetic_volume(core, bundled_model):
    selftest.runBundledModelSelfTest(core.scene, log=print)


def test_self_test_real_ct_with_slicers_reader(core, bundled_model, data_root):
    dice = selftest.runRealCTSelfTest(core.scene, core.volumesLogic, data_root, log=print)
    assert dice == pytest.approx(bundled_model.sample_ct_dice, abs=0.02)  # the figure its card records
