"""LiteSegSlicerLib: the Slicer side of the LiteSeg extension, shared by its two modules
(MoNetSegmentation, LowResDetect), whose module files only hold the Slicer module, parameter
node, widget, logic and test classes.

Everything here except `widget` runs both inside 3D Slicer and on Slicer's non-Qt core (the
`slicer-core` wheel), where it is tested (Testing/slicer). Importing this package is cheap: it
imports neither torch nor SimpleITK; the submodules that need them import them when used.

- `paths`: the only `sys.path` code: finds this library and the `liteseg` engine in a checkout.
- `models`: the bundled segmentation and detection models, listed without torch.
- `dependencies`: asks once, then installs a CPU build of PyTorch (one installation for the extension).
- `volume_bridge`: exact vtkMRMLScalarVolumeNode <-> SimpleITK image conversion.
- `segmentation_writer`: writes a labelmap into a vtkMRMLSegmentationNode in one import per segment.
- `processing`: what both logics' `process()` share (checks, cancel, progress, rollback).
- `segmentation_logic`: `SegmentationLogic.process(...)`, MoNetSegmentation's scripting / batch API.
- `detection_logic`, `detection_outputs`: `DetectionLogic.process(...)`, LowResDetect's API, and
  its segments, table and ROIs.
- `selftest_common`, `segmentation_selftest`, `detection_selftest`: the modules' self-test bodies,
  runnable in Slicer and from pytest.
- `parameter_gui`, `reloading`: Qt-free helpers of the widget (parameter bindings, "Reload").
- `widget`: `LiteSegModuleWidget`, the base of both module widgets (Qt; imported by the module
  files only, inside Slicer).
"""
