"""LowResDetect's self-test body (LowResDetectTest in Slicer) run through the same harness: a
hand-set LowRes model card written on the fly, then the bundled model on a real DeepLesion slab."""

import pytest

from slicer_harness import SLICER_MISSING

slicer = pytest.importorskip("slicer", reason=SLICER_MISSING)

from slicer_fixtures import bundled_lowres_model, core, deeplesion_root  # noqa: E402,F401  (pytest fixtures)

from LiteSegSlicerLib import detection_selftest as selftest  # noqa: E402


def test_self_test_on_synthetic_lesions(core, tmp_path):
    counts = selftest.runGeometrySelfTest(core.scene, log=lambda message: None, folder=tmp_path)
    assert counts == {name: len(selftest.LESIONS) for name in selftest.GEOMETRIES}
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".pt"]


def test_self_test_bundled_model_on_a_real_slab(core, bundled_lowres_model, deeplesion_root):
    dice = selftest.runBundledModelSelfTest(core.scene, core.volumesLogic, deeplesion_root, log=print)
    assert dice > 0.5


def test_the_hand_set_network_is_the_documented_one():
    import torch
    import torch.nn.functional as F

    network = selftest.brightObjectNetwork()
    x = torch.rand(1, 1, 24, 16, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = network.stage1(x)
        pooled = F.avg_pool3d(F.max_pool3d(F.avg_pool3d(x, 2, ceil_mode=True), 2, ceil_mode=True), 2, ceil_mode=True)
        torch.testing.assert_close(features.logits8, 20 * (pooled - selftest.STAGE1_CUT), atol=1e-5, rtol=0)
        torch.testing.assert_close(network.stage2(features), 20 * (x - 0.5), atol=1e-5, rtol=0)
