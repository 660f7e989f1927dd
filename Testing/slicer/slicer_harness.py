"""Slicer's non-Qt core set up the way the Slicer application sets itself up at start-up.

`import slicer` from the `slicer-core` wheel gives the MRML classes and the module logics, but no
`slicer.mrmlScene`, `slicer.app` or `slicer.modules`: the application creates those. The Slicer
application (qSlicerCoreApplication and the module factory manager) creates a scene with a data
IO manager and a default crosshair, a vtkSlicerApplicationLogic on it, and for each loaded module
its logic, which it registers on the application logic under the module's name
(appLogic.SetModuleLogic(name, logic)) before setting the module's scene. Logics look each other
up through the application logic: without that wiring several of them fail ("Unable to get
application logic", "invalid Volumes logic", terminologies missing).

Here the same is done for the modules this extension relies on: Colors, Terminologies,
SubjectHierarchy, Volumes, Segmentations and Transforms. The default terminology files are not in
the slicer-core wheel; `terminologies/` beside this file holds minimal ones (the pancreas entry,
same context names as Slicer's), so that the Terminologies logic starts without errors.

Nothing of Slicer's GUI (Qt, qSlicer*, parameter node wrapper, subject hierarchy plugins,
slicer.util.load*/save*) is present or emulated.
"""

from __future__ import annotations

from pathlib import Path

TERMINOLOGIES_DIR = Path(__file__).resolve().parent / "terminologies"
SLICER_MISSING = "slicer-core is not installed (pip install slicer-core): these tests need Slicer's real MRML core"


class SlicerCore:
    """A scene, the application logic and the registered module logics."""

    def __init__(self) -> None:
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection, vtkOutputWindow, vtkStringOutputWindow

        # Capture VTK errors and warnings so that tests can assert there were none.
        self.output = vtkStringOutputWindow()
        vtkOutputWindow.SetInstance(self.output)
        self._seen = 0

        self.scene = slicer.vtkMRMLScene()
        # qSlicerCoreApplication::setMRMLScene: a data IO manager with a cache manager, one crosshair.
        self.scene.SetDataIOManager(slicer.vtkDataIOManager())
        self.scene.GetDataIOManager().SetCacheManager(slicer.vtkCacheManager())
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)

        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.appLogic.SetSliceLogics(vtkCollection())
        self.appLogic.SetViewLogics(vtkCollection())

        # The Colors module's logic is the application's colour logic (default colour tables).
        colors = self.appLogic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.appLogic.SetModuleLogic("Colors", colors)

        terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
        terminologies.SetModuleShareDirectory(str(TERMINOLOGIES_DIR))
        self.logics = {"Colors": colors}
        for name, logic in (
            ("Terminologies", terminologies),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic()),
            ("Transforms", slicer.vtkSlicerTransformLogic()),
            ("Volumes", slicer.vtkSlicerVolumesLogic()),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
        ):
            self.register(name, logic)

    def register(self, name: str, logic) -> None:
        """What qSlicerModuleFactoryManager::loadModule and module setup do for one module."""
        self.appLogic.SetModuleLogic(name, logic)
        logic.SetMRMLApplicationLogic(self.appLogic)
        logic.SetMRMLScene(self.scene)
        self.logics[name] = logic

    def logic(self, name: str):
        """A module logic looked up the way modules do it: through the application logic."""
        return self.appLogic.GetModuleLogic(name)

    @property
    def volumesLogic(self):
        return self.logic("Volumes")

    @property
    def segmentationsLogic(self):
        return self.logic("Segmentations")

    def vtkMessages(self) -> str:
        """VTK errors and warnings since the last call."""
        text = self.output.GetOutput()
        new, self._seen = text[self._seen:], len(text)
        return new

    def close(self) -> None:
        from vtkmodules.vtkCommonCore import vtkOutputWindow

        self.scene.Clear(True)
        vtkOutputWindow.SetInstance(None)
