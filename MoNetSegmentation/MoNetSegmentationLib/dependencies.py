"""PyTorch inside Slicer: ask once, then install a CPU build.

Slicer's Python does not ship torch. An unpinned `pip install torch` pulls the CUDA packages
(gigabytes) on Linux, so a CPU build is installed: through the PyTorch extension's
`PyTorchUtils` when that extension is installed (it knows Slicer's Python), otherwise with pip
from PyTorch's CPU index. The user is asked before anything is downloaded; never during
Slicer's self-tests (`slicer.app.testingEnabled()`), where a missing torch is an error.

Not testable outside the Slicer application (it needs `slicer.app` and `slicer.util`'s dialogs);
`torchAvailable` is.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
QUESTION = (
    "LiteSeg (MoNet Segmentation, LowRes Detect) needs PyTorch, which is not installed in this Slicer.\n\n"
    "Install the CPU build of PyTorch now? It is downloaded once (a few hundred MB) "
    "and can take some minutes. No GPU is needed."
)


def torchAvailable() -> bool:
    """Whether `import torch` can work (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def ensureTorch() -> bool:
    """Make `import torch` work inside Slicer; True when it does, False when the user declined.

    Asks once (OK / Cancel) before installing. In testing mode it never asks and raises instead.
    """
    if torchAvailable():
        return True
    import slicer

    if slicer.app.testingEnabled():
        raise RuntimeError(
            "PyTorch is not installed in this Slicer; install it (CPU build) before running the "
            "LiteSeg module tests"
        )
    if not slicer.util.confirmOkCancelDisplay(QUESTION, windowTitle="Install PyTorch"):
        logging.info("LiteSeg: installation of PyTorch declined")
        return False
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
