"""DICOM Segmentation objects (what PACS stores) of a labelmap computed on a DICOM series, written
with highdicom (optional extra `liteseg[dicom]`, imported only here): one binary segment per
label of the model card, with its name and SNOMED CT category and type codes, the algorithm
(model name and version), and references to every source slice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from liteseg import __version__
from liteseg.errors import LiteSegError
from liteseg.io.images import check_output_path
from liteseg.io.modelcard import ModelCard

MANUFACTURER = "LiteSeg"


def require_highdicom() -> None:
    """Raise LiteSegError with the install command when highdicom is missing."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise LiteSegError("writing DICOM SEG needs highdicom: pip install 'liteseg[dicom]' (or pip install highdicom)") from None


def _code(entry: dict):
    from pydicom.sr.coding import Code

    return Code(entry["code"], entry["scheme"], entry["meaning"])


def segment_descriptions(card: ModelCard) -> list:
    """One highdicom SegmentDescription per card label, numbered 1..N in the card's order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{MANUFACTURER} {card.name}", version=card.version, family=codes.cid7162.ArtificialIntelligence
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label["name"],
            segmented_property_category=_code(label["category"]),
            segmented_property_type=_code(label["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, label in enumerate(card.labels, 1)
    ]


def write_dicom_seg(labelmap: sitk.Image, source_files: Sequence[str], card: ModelCard, path: str | Path,
                    overwrite: bool = False) -> Path:
    """Write `labelmap` (on the grid of the series read from `source_files`, in that order) as a
    DICOM SEG at `path`, atomically; labels are the card's values, written as segments 1..N."""
    require_highdicom()
    import highdicom as hd
    import pydicom

    path = Path(path)
    check_output_path(path, overwrite=overwrite, suffixes=("",))
    array = sitk.GetArrayViewFromImage(labelmap)
    if array.shape[0] != len(source_files):
        raise LiteSegError(f"labelmap has {array.shape[0]} slices, the DICOM series {len(source_files)} files")
    sources = [pydicom.dcmread(name) for name in source_files]
    segments = np.zeros(array.shape, np.uint8)
    for number, label in enumerate(card.labels, 1):
        segments[array == label["value"]] = number
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segments,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(card),
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=card.name,
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"{card.name} {card.version} segmentation",
        omit_empty_frames=bool(segments.any()),  # an empty result keeps every frame: a SEG is never frameless
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        seg.save_as(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
