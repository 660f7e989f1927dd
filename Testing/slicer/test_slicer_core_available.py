"""In CI the Slicer tests must run, not skip: slicer-core has to be installed there."""

import os

import pytest


@pytest.mark.skipif(not os.environ.get("CI"), reason="outside CI the Slicer tests may skip without slicer-core")
def test_slicer_core_is_installed_in_ci():
    try:
        import slicer  # noqa: F401
    except ImportError as error:
        pytest.fail(f"CI must `pip install slicer-core` for Testing/slicer: {error}")
