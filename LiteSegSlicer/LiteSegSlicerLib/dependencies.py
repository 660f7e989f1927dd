"""PyTorch inside Slicer: ask once, then install a CPU build.

Slicer's Python does not ship torch. An unpinned `pip install torch` pulls the CUDA packages
(gigabytes) on Linux, so a CPU build is installed: through the PyTorch extension's
`PyTorchUtils` when that extension is installed (it knows Slicer's Python), otherwise with pip
from PyTorch's CPU index. The user is asked before anything is downloaded; never during
Slicer's self-tests (`slicer.app.testingEnabled()`), where a missing torch is an error.

One installation at a time for the whole extension (`installOnce`): pip's output pumps Qt
events, so without the guard a second click (or the other module's button) would start a
second installation.

`ensureTorch` is not testable outside the Slicer application (it needs `slicer.app` and
`slicer.util`'s dialogs); `torchAvailable` and `installOnce` are.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Callable, Optional

CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
QUESTION = (
    "LiteSeg (MoNet Segmentation, LowRes Detect) needs PyTorch, which is not installed in this Slicer.\n\n"
    "Install the CPU build of PyTorch now? It is downloaded once (a few hundred MB) "
    "and can take some minutes. No GPU is needed."
)


_installing = False


def installationRunning() -> bool:
    """Whether a PyTorch installation started by either LiteSeg module is still running."""
    return _installing


def installOnce(install: Callable[[], bool]) -> bool:
    """Run `install` unless an installation is already running (then False at once)."""
    global _installing
    if _installing:
        return False
    _installing = True
    try:
        return install()
    finally:
        _installing = False


def torchAvailable() -> bool:
    """Whether `import torch` can work (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def ensureTorch(onInstallStart: Optional[Callable[[], None]] = None) -> bool:
    """Make `import torch` work inside Slicer; True when it does, False when the user declined
    or another installation is running.

    Asks once (OK / Cancel) before installing, then calls `onInstallStart` (e.g. to say so in the
    panel). In testing mode it never asks and raises instead.
    """
    if torchAvailable():
        return True
    import slicer

    if slicer.app.testingEnabled():
        raise RuntimeError(
            "PyTorch is not installed in this Slicer; install it (CPU build) before running the "
            "LiteSeg module tests"
        )
    if installationRunning():
        return False
    if not slicer.util.confirmOkCancelDisplay(QUESTION, windowTitle="Install PyTorch"):
        logging.info("LiteSeg: installation of PyTorch declined")
        return False
    if onInstallStart is not None:
        onInstallStart()
    return installOnce(_installTorch)


def requireTorchForSelfTests() -> None:
    """A module's "Reload and Test" without PyTorch: offer the installation first (`ensureTorch`),
    RuntimeError when it is still missing."""
    if not ensureTorch():
        raise RuntimeError("the self-tests need PyTorch, which is not installed")


def torchReadyForPanel(button, statusLabel, refresh: Callable[[], None], translate: Callable[[str], str] = str) -> bool:
    """A panel's check before it runs: `ensureTorch` with the run `button` disabled meanwhile
    (`refresh` restores it), what happens in `statusLabel`, and False at once while the other
    module installs PyTorch. `translate` is the module's `_`."""
    if installationRunning():
        statusLabel.text = translate("PyTorch is being installed: wait until it is done")
        return False

    def sayInstalling() -> None:
        import slicer

        statusLabel.text = translate("Installing PyTorch (CPU build, a few hundred MB): this can take some minutes...")
        slicer.app.processEvents()

    button.enabled = False
    try:
        ready = ensureTorch(onInstallStart=sayInstalling)
    finally:
        refresh()
    if not ready:
        statusLabel.text = translate("PyTorch is needed: not installed")
    return ready


def _installTorch() -> bool:
    """Install a CPU build of PyTorch (the PyTorch extension's installer when present, else pip)."""
    import slicer

    try:
        import PyTorchUtils  # the PyTorch extension's module, when installed
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, forceComputationBackend="cpu")
        if torch is None:
            return False
    else:
        slicer.util.pip_install(f"torch --index-url {CPU_INDEX_URL}")
    importlib.invalidate_caches()
    return torchAvailable()
