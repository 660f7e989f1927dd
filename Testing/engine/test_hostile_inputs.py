"""Hostile inputs to `liteseg segment`: each case ends in a one-line error (exit status 2, no output
file) or in a correct result (a labelmap on exactly the input grid), and never changes a file
of the user's."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import GEOMETRIES, phantom_image

from liteseg.cli.main import main
from liteseg.io.modelcard import find_card

RESULT = "result"  # the expected outcome of a case that must be segmented


def ct(size=(20, 24, 18), spacing=(0.9, 1.3, 2.5), direction="oblique_20deg") -> sitk.Image:
    return phantom_image(GEOMETRIES[direction], size=size, spacing=spacing)


def from_array(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def ct_array(dtype, offset: float = 0.0) -> np.ndarray:
    return sitk.GetArrayFromImage(ct()).astype(np.float64).__add__(offset).astype(dtype)


def written(image: sitk.Image, name: str = "input.nrrd") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        path = folder / name
        sitk.WriteImage(image, str(path))
        return [str(path)]
    return make


def raw_bytes(data: bytes, name: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return [str(folder / name)]
    return make


def cut(fraction: float, name: str, corrupt: bool = False) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        whole = folder / f"whole_{name}"
        sitk.WriteImage(ct(), str(whole))
        data = bytearray(whole.read_bytes())
        whole.unlink()
        if corrupt:
            middle = len(data) // 2
            data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
        else:
            data = data[: int(len(data) * fraction)]
        (folder / name).write_bytes(bytes(data))
        return [str(folder / name)]
    return make


def with_options(make: Callable[[Path], list[str]], *options: str) -> Callable[[Path], list[str]]:
    return lambda folder: make(folder) + list(options)


def mislabelled(folder: Path) -> list[str]:
    """An NRRD file named .nii.gz: ITK picks its reader by the name and refuses it."""
    sitk.WriteImage(ct(), str(folder / "real.nrrd"))
    os.replace(folder / "real.nrrd", folder / "input.nii.gz")
    return [str(folder / "input.nii.gz")]


def bad_card(change: Callable[[dict, Path], None]) -> Callable[[Path], list[str]]:
    """The bundled card and weights copied into the input folder, then broken by `change`."""
    def make(folder: Path) -> list[str]:
        sitk.WriteImage(ct(), str(folder / "input.nrrd"))
        card = find_card("monet-pancreas-nih")
        shutil.copy(card.weights_path, folder / card.weights_path.name)
        data = json.loads(card.path.read_text())
        change(data, folder)
        (folder / "card.json").write_text(json.dumps(data))
        return [str(folder / "input.nrrd"), "--model", str(folder / "card.json")]
    return make


def tamper(data: dict, folder: Path) -> None:
    weights = folder / data["weights"]
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))


def other_network_weights(data: dict, folder: Path) -> None:
    import torch

    from liteseg.io.modelcard import sha256_file
    from liteseg.models import build_model

    torch.save(build_model("unet16").state_dict(), folder / data["weights"])
    data["sha256"] = sha256_file(folder / data["weights"])


def truncated_weights_rehashed(data: dict, folder: Path) -> None:
    """A broken export: the weights cut short and the card's checksum made to match them."""
    from liteseg.io.modelcard import sha256_file

    weights = folder / data["weights"]
    weights.write_bytes(weights.read_bytes()[:500])
    data["sha256"] = sha256_file(weights)


def invalid_json(folder: Path) -> list[str]:
    sitk.WriteImage(ct(), str(folder / "input.nrrd"))
    (folder / "card.json").write_text("{ not json")
    return [str(folder / "input.nrrd"), "--model", str(folder / "card.json")]


def lowres_card(folder: Path) -> list[str]:
    sitk.WriteImage(ct(), str(folder / "input.nrrd"))
    return [str(folder / "input.nrrd"), "--model", "lowres-lesion"]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # shapes and types
    "2D image": (written(sitk.Image(32, 32, sitk.sitkInt16)), "2D"),
    "4D image": (written(sitk.Image([16, 16, 8, 3], sitk.sitkInt16)), "4D"),
    "vector image": (written(sitk.Image([16, 16, 8], sitk.sitkVectorFloat32, 3)), "components per voxel"),
    "constant volume": (written(from_array(np.full((8, 16, 16), -1000, np.int16))), "empty"),
    "NaN voxels": (written(from_array(np.where(ct_array(np.float32) > 100, np.nan, ct_array(np.float32)))), "NaN"),
    "Inf voxels": (written(from_array(np.where(ct_array(np.float32) > 100, np.inf, ct_array(np.float32)))), "infinite"),
    "a line": (written(from_array(np.linspace(-1000, 200, 20).astype(np.int16).reshape(20, 1, 1))), "a line or a point"),
    "single sagittal slice": (written(ct(size=(1, 24, 18), direction="axial_identity")), "single slice"),
    "single axial slice": (written(ct(size=(20, 24, 1), direction="axial_identity")), RESULT),
    "tiny 2x2x2": (written(from_array(np.array([[[-1000, 40], [150, -1000]]] * 2, np.int16))), RESULT),
    "huge in-plane 1536x1536x2": (written(sitk.Resample(ct(), [1536, 1536, 2], sitk.Transform(), sitk.sitkNearestNeighbor,
                                                        ct().GetOrigin(), (0.02, 0.02, 10.0), ct().GetDirection(), -1000)), RESULT),
    "very anisotropic 0.2 x 0.2 x 40 mm": (written(from_array(ct_array(np.int16), spacing=(0.2, 0.2, 40.0))), RESULT),
    "int32 CT": (written(from_array(ct_array(np.int32))), RESULT),
    "float32 CT": (written(from_array(ct_array(np.float32))), RESULT),
    "float64 CT": (written(from_array(ct_array(np.float64))), RESULT),
    "uint16 CT stored as HU + 1000": (written(from_array(ct_array(np.uint16, 1000))), "does not look like a CT"),
    # not CT, grey levels
    "MRI-like intensities": (written(from_array(np.random.default_rng(0).uniform(0, 900, (8, 32, 32)).astype(np.float32))), "does not look like a CT"),
    "8-bit grey levels": (written(from_array(ct_array(np.float64, 1000).clip(0, 255).astype(np.uint8))), "does not look like a CT"),
    "8-bit grey levels, --allow-non-ct": (with_options(written(from_array(ct_array(np.float64, 1000).clip(0, 255).astype(np.uint8))), "--allow-non-ct"), RESULT),
    # broken, truncated, mislabelled files
    "random bytes named .nii.gz": (raw_bytes(bytes(range(256)) * 8, "input.nii.gz"), "cannot read"),
    "empty file": (raw_bytes(b"", "input.nii.gz"), "cannot read"),
    "text named .nrrd": (raw_bytes(b"hello, not an image\n", "input.nrrd"), "cannot read"),
    ".nii.gz cut in half": (cut(0.5, "input.nii.gz"), "truncated or corrupted"),
    ".nii.gz cut to its header": (cut(0.01, "input.nii.gz"), "truncated or corrupted"),
    ".nii.gz corrupted inside": (cut(1.0, "input.nii.gz", corrupt=True), "truncated or corrupted"),
    ".nii cut short": (cut(0.7, "input.nii"), "truncated or corrupted"),
    ".mha cut short": (cut(0.7, "input.mha"), "truncated or corrupted"),
    ".nrrd cut short": (cut(0.7, "input.nrrd"), "expected .* bytes|fread got only"),
    "NRRD named .nii.gz": (mislabelled, "cannot read .*Unable to determine ImageIO reader"),
    "folder without DICOM": (lambda folder: [str(folder)], "folder without a DICOM series"),
    "missing input": (lambda folder: [str(folder / "nothing.nii.gz")], "input not found"),
    # bad model cards and weights
    "weights missing": (bad_card(lambda data, folder: (folder / data["weights"]).unlink()), "weights file missing"),
    "weights tampered": (bad_card(tamper), "does not match its model card"),
    "weights of another network": (bad_card(other_network_weights), "do not fit network"),
    "weights cut short, checksum matching": (bad_card(truncated_weights_rehashed), "cannot be read: damaged"),
    "card without its labels": (bad_card(lambda data, folder: data.pop("labels")), "labels"),
    "card of an unknown network": (bad_card(lambda data, folder: data.update(network="no_such_net")), "no_such_net"),
    "card not JSON": (invalid_json, "card"),
    "detection card for segmentation": (lowres_card, "not a slice-by-slice segmentation model"),
    "unknown model name": (with_options(written(ct()), "--model", "no-such-model"), "unknown model"),
    "model card path missing": (with_options(written(ct()), "--model", "no such card.json"),
                                "model card not found: no such card.json"),
    # bad options
    "threshold 0": (with_options(written(ct()), "--threshold", "0"), "threshold"),
    "threshold 1.5": (with_options(written(ct()), "--threshold", "1.5"), "threshold"),
    "batch size 0": (with_options(written(ct()), "--batch-size", "0"), "batch_size"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input(tmp_path, capsys, case):
    make, expected = CASES[case]
    inputs = tmp_path / "user files"
    inputs.mkdir()
    arguments = make(inputs)
    before = snapshot(inputs)
    output = tmp_path / "out" / "segmentation.nii.gz"
    code = main(["segment", arguments[0], str(output), "--no-localise", *arguments[1:]])
    err = capsys.readouterr().err.strip()
    assert snapshot(inputs) == before, "a user file changed"
    if expected == RESULT:
        assert code == 0, err
        labelmap, source = sitk.ReadImage(str(output)), sitk.ReadImage(arguments[0])
        assert labelmap.GetSize() == source.GetSize()
        np.testing.assert_allclose(labelmap.GetSpacing(), source.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(labelmap.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(labelmap.GetDirection(), source.GetDirection(), atol=1e-6)
        assert set(np.unique(sitk.GetArrayViewFromImage(labelmap))) <= {0, 1}
    else:
        assert code == 2, err
        assert len(err.splitlines()) == 1 and err.startswith("liteseg: error:"), err
        assert re.search(expected, err), err
        assert not output.exists()


def test_odd_paths_spaces_non_ascii_missing_output_folder(tmp_path, capsys):
    source = tmp_path / "scans of ß ü" / "ct 1 é.nii.gz"
    source.parent.mkdir()
    sitk.WriteImage(ct(), str(source))
    output = tmp_path / "new folder" / "deeper ä" / "seg é.nrrd"
    assert main(["segment", str(source), str(output), "--no-localise"]) == 0, capsys.readouterr().err
    assert sitk.ReadImage(str(output)).GetSize() == ct().GetSize()


@pytest.mark.parametrize("trouble", ["output is the input", "output exists", "output under a file", "output extension .png"])
def test_outputs_that_cannot_be_written_leave_everything_as_it_was(tmp_path, capsys, trouble):
    source = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct(), str(source))
    existing = tmp_path / "seg.nii.gz"
    existing.write_bytes(b"the user's earlier result")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    output = {"output is the input": source, "output exists": existing,
              "output under a file": tmp_path / "notes.txt" / "seg.nii.gz", "output extension .png": tmp_path / "seg.png"}[trouble]
    before = snapshot(tmp_path)
    assert main(["segment", str(source), str(output), "--no-localise"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("liteseg: error:"), err
    assert snapshot(tmp_path) == before
