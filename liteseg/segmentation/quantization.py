"""int8 models for the OpenVINO backend: post-training quantisation with NNCF (optional extra
`liteseg[int8]`; running the result needs only OpenVINO).

`liteseg quantize` calibrates on a few slices of each of a model's *training* patients, writes
`<name>.int8.xml` / `.bin` beside its card and records them in the card under "int8" with their
checksums and the accuracy check (Dice change against float32 on the held-out patients and the
sample CT). `register_card_int8` (called by `load_model`) makes a checked int8 model the
"openvino-int8" form of the card's network, which "auto" then prefers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.io.modelcard import ModelCard, sha256_file
from liteseg.segmentation.preprocessing import resize_slices

NNCF_MISSING = "int8 quantisation needs NNCF: pip install 'liteseg[int8]'"
SLICES_PER_PATIENT = 4


def calibration_batches(cases: Sequence, patients: Sequence[str], card: ModelCard,
                        per_patient: int = SLICES_PER_PATIENT) -> list[np.ndarray]:
    """Network inputs (1, 1, H, W) of up to `per_patient` evenly spaced slices of each patient,
    preprocessed as at inference."""
    by_patient = {case.patient: case for case in cases}
    batches = []
    for patient in patients:
        image, _ = by_patient[patient].read((1,), card.preprocessing)
        volume = sitk.GetArrayFromImage(image)
        chosen = np.unique(np.linspace(0, len(volume) - 1, min(per_patient, len(volume))).round().astype(int))
        normalised = card.preprocessing.normalizer(volume)(volume[chosen])
        inputs = resize_slices(torch.from_numpy(np.ascontiguousarray(normalised))[:, None], card.preprocessing.slice_size)
        batches += [inputs[i : i + 1].numpy() for i in range(len(inputs))]
    return batches


def quantize_network(network: nn.Module, batches: list[np.ndarray], output: Path) -> Path:
    """Quantise `network` to int8 with NNCF on `batches` and save it as `output` (.xml + .bin)."""
    try:
        import nncf
    except ImportError:
        raise LiteSegError(NNCF_MISSING) from None
    from liteseg.segmentation.openvino_runtime import converted_model, network_key

    model = converted_model(network, network_key(network))  # says so when OpenVINO is missing
    import openvino

    quantised = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    openvino.save_model(quantised, output, compress_to_fp16=False)
    return output


def int8_entry(card: ModelCard, model: Path, calibration: Sequence[str], check: dict, command: str) -> dict:
    """The card's "int8" record of the quantised `model` beside it."""
    import nncf
    import openvino

    return {
        "model": model.name,
        "sha256_xml": sha256_file(model),
        "sha256_bin": sha256_file(model.with_suffix(".bin")),
        "method": f"NNCF {nncf.__version__} post-training quantisation (default preset) for OpenVINO {openvino.__version__}",
        "calibration_patients": list(calibration),
        "check": check,
        "command": command,
    }


def register_card_int8(card: ModelCard, network: nn.Module) -> Optional[Path]:
    """Register the card's int8 model for `network` when it passed its check, OpenVINO is
    installed and its files match their checksums (a warning, and float32, otherwise)."""
    from liteseg.segmentation.openvino_runtime import openvino_available, register_int8

    entry = card.data.get("int8")
    if not entry or not entry.get("check", {}).get("passed") or not openvino_available():
        return None
    model = card.path.parent / entry["model"]
    for path, expected in ((model, entry["sha256_xml"]), (model.with_suffix(".bin"), entry["sha256_bin"])):
        if not path.is_file() or sha256_file(path) != expected:
            warnings.warn(f"int8 model {path} of {card.name} is missing or does not match its card: "
                          "running in float32; run liteseg quantize again", stacklevel=2)
            return None
    register_int8(network, model)
    return model
