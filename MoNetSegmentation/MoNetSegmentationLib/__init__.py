"""Qt-free part of the MoNetSegmentation Slicer module.

Everything here runs both inside 3D Slicer and on Slicer's non-Qt core (the `slicer-core`
wheel), where it is tested (Testing/slicer). Importing this package is cheap: it imports
neither torch nor SimpleITK; the submodules that need them import them when used.

- `engine`: finds the `liteseg` engine package and lists the bundled models without torch.
- `dependencies`: asks once, then installs a CPU build of PyTorch inside Slicer.
- `volume_bridge`: exact vtkMRMLScalarVolumeNode <-> SimpleITK image conversion.
- `segmentation_writer`: writes a labelmap into a vtkMRMLSegmentationNode in one import.
- `logic`: `SegmentationLogic.process(...)`, the blocking scripting / batch API.
- `selftest`: the module's self-test body, runnable in Slicer and from pytest.
"""

from .engine import DEFAULT_MODEL, ModelInfo, availableModels, bundledModelNames

__all__ = ["DEFAULT_MODEL", "ModelInfo", "availableModels", "bundledModelNames"]
