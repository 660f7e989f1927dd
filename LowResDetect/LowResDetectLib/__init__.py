"""Qt-free part of the LowResDetect Slicer module.

Everything here runs both inside 3D Slicer and on Slicer's non-Qt core (the `slicer-core`
wheel), where it is tested (Testing/slicer/test_lowres_*.py). Importing this package is cheap:
it imports neither torch nor SimpleITK; the submodules that need them import them when used.

The volume <-> image bridge, the segment writer, the engine import and the PyTorch installer are
the MoNetSegmentation module's (`MoNetSegmentationLib`), imported, not copied (see `shared`).

- `shared`: makes `MoNetSegmentationLib` and the `liteseg` engine importable.
- `outputs`: the detections as segments, a table node and markups ROI nodes.
- `logic`: `DetectionLogic.process(...)`, the blocking scripting / batch API.
- `selftest`: the module's self-test body, runnable in Slicer and from pytest.
"""

from .shared import availableDetectorModels

__all__ = ["availableDetectorModels"]
