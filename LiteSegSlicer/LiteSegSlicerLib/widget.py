"""`LiteSegModuleWidget`: what both module panels share (GUI wiring only; the work is the logic's).

The panel's .ui file (`Resources/UI/<Module>.ui` of the module, found by `resourcePath`, so build
trees and installs find it as the Slicer template does), the parameter node bound to its widgets
through their `SlicerParameterName` property (`connectParametersToGui`, whose tag lets `exit()`
disconnect on Slicer 5.8 too), a run button that turns into Cancel while the logic runs, the
progress bar and status line, the PyTorch check before a run, and "Reload" reloading this
library too.

A module's widget subclasses it and sets `runText`, `runToolTip`, `cancelToolTip`,
`failureMessage`, `modelChoices`; it implements `createLogic`, `setupPanel` (sets
`self.runButton`, connects its own widgets), `processArguments` (the logic's `process` arguments
from the parameter node) and `showResult`, and may extend `updatePanel`, `inputProblem` and
`setParameterNode` (e.g. with `labelModels`, the models shown with their versions).
The module files import Slicer's translation functions `_` and `translate` from here too.

A widget file: it imports Qt (through Slicer's ScriptedLoadableModule) and runs only inside the
Slicer application; it is not imported on Slicer's non-Qt core.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .parameter_gui import parameterWidgets

# Slicer's translation functions, also for the module files (`tr` takes its context from the file
# that calls it, so re-exported it still translates in the module file's context).
try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4
    def _(text):
        return text

    def translate(context, text):
        return text


class LiteSegModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only: parameter node <-> widgets, run / Cancel, progress and status."""

    runText = ""  # the run button's text (the module's translated string)
    runToolTip = ""  # its tool tip when it can run
    cancelToolTip = ""  # its tool tip while running (it reads "Cancel" then)
    failureMessage = ""  # the title of the error shown when a run fails
    modelChoices: Callable[[], list] = staticmethod(lambda: [])  # the model selector's choices, default first

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.runButton = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancel = threading.Event()
        self._running = False

    # ------------------------------------------------------------------ what a module provides
    def createLogic(self):
        """The module's logic (with the parameter node)."""
        raise NotImplementedError

    def setupPanel(self) -> None:
        """Set `self.runButton` (a widget of the .ui) and connect the module's own widgets."""
        raise NotImplementedError

    def processArguments(self, parameters) -> dict:
        """The logic's `process` keyword arguments (progress and cancel excepted) from the parameter node."""
        raise NotImplementedError

    def showResult(self, result) -> None:
        """Show what `process` returned (status line, outputs in the parameter node)."""
        raise NotImplementedError

    def updatePanel(self) -> None:
        """Bring the module's own widgets up to date with the parameter node (before the run button)."""

    def inputProblem(self) -> Optional[str]:
        """Why the panel cannot run now (the run button's tool tip), or None."""
        if not (self._parameterNode and self._parameterNode.inputVolume):
            return _("Select an input volume")
        return None

    # ------------------------------------------------------------------ Slicer widget life cycle
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = self.createLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.setupPanel()
        self.runButton.connect("clicked(bool)", self.onRunButton)
        self.ui.progressBar.setVisible(False)

        self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the shared library too, then the module (Slicer reloads only the module file)."""
        from .reloading import reloadLibraries

        reloadLibraries("LiteSegSlicerLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self._cancel.set()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateRunButton)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancel.set()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateRunButton)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            choices = self.modelChoices()
            if self._parameterNode.model not in choices:  # a scene saved with another model
                self._parameterNode.model = choices[0]  # (the combo box's connector refuses unknown values)
            # Widgets are found by their "SlicerParameterName" property (see the .ui file); the
            # tag of connectParametersToGui (unlike connectGui's on Slicer 5.8) lets exit() disconnect.
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateRunButton)
            self.updateRunButton()

    def labelModels(self, selector, models) -> None:
        """Show each model of a model selector with its version and its card as tool tip (the
        parameter node keeps the plain name)."""
        infos = {m.name: m for m in models}
        for index in range(selector.count):
            info = infos.get(selector.itemText(index))
            if info is not None:
                selector.setItemText(index, info.label)
                selector.setItemData(index, str(info.card), qt.Qt.ToolTipRole)

    # ------------------------------------------------------------------ run / cancel
    def updateRunButton(self, caller=None, event=None) -> None:
        self.updatePanel()
        if self._running:
            self.runButton.text = _("Cancel")
            self.runButton.toolTip = self.cancelToolTip
            self.runButton.enabled = True
            return
        self.runButton.text = self.runText
        problem = self.inputProblem()
        self.runButton.toolTip = problem or self.runToolTip
        self.runButton.enabled = problem is None

    def onRunButton(self) -> None:
        if self._running:  # the button reads "Cancel" while running
            self._cancel.set()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        with slicer.util.tryWithErrorDisplay(self.failureMessage, waitCursor=True):
            if not self._torchReady():
                return
            self._run()

    def _torchReady(self) -> bool:
        """PyTorch importable, installed first if the user agrees (see `torchReadyForPanel`)."""
        from .dependencies import torchReadyForPanel

        return torchReadyForPanel(self.runButton, self.ui.statusLabel, self.updateRunButton, _)

    def _run(self) -> None:
        from .processing import Cancelled

        self._cancel.clear()
        self._setRunning(True)
        try:
            result = self.logic.process(
                **self.processArguments(self._parameterNode), progress=self._onProgress, cancel=self._cancel
            )
        except Cancelled:
            self.ui.statusLabel.text = _("Cancelled: nothing was written")
            return
        finally:
            self._setRunning(False)
        self.showResult(result)

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self.ui.parametersCollapsibleButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self.updateRunButton()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # keeps the GUI (and the Cancel button) responsive
