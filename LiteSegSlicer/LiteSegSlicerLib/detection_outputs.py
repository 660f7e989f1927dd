"""The detections in the scene: one segment, one table row and one markups ROI per object.

Segments are named "Lesion 1", "Lesion 2", ... (one per detected object, in the engine's order,
so that segment, table row and ROI share their number), each with the SNOMED CT terminology of a
lesion (category SCT 49755003 "Morphologically Altered Structure", type SCT 52988006 "Lesion").
They are written by the segment writer (`segmentation_writer`: one import per segment, on exactly
the input volume's grid, the volume as reference geometry).

The table (`TABLE_COLUMNS`) has one row per object: index, name, centre (the centroid of the
object's voxels, RAS mm, in world coordinates, where the slice views show it), the size of the
refined box along the volume's I, J, K axes in mm, the volume in ml and the highest probability.

Each ROI (vtkMRMLMarkupsROINode, type Box) is the refined box: oriented along the volume's axes,
its faces on the outer faces of the box's voxels, so an oblique volume gives an oblique ROI.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from . import segmentation_writer
from .paths import importEngine
from .volume_bridge import ijkToRas, nodeLabel

importEngine()
from liteseg.io.labels import LESION_LABEL  # noqa: E402  (torch-free; the engine's terminology of a lesion)

SEGMENT_PREFIX = LESION_LABEL["name"]  # "Lesion"; segment N is "Lesion N"
# Distinct colours (0-255), cycled; segment N and ROI N get the same one.
PALETTE = (
    (230, 80, 60), (60, 160, 230), (240, 200, 40), (120, 200, 90),
    (200, 100, 220), (250, 140, 40), (60, 200, 190), (230, 110, 160),
)
_SEGMENT_NAME = re.compile(rf"^{SEGMENT_PREFIX} \d+$")

# (column name, vtk array type, unit label, description)
TABLE_COLUMNS = (
    ("Index", "int", "", "Number of the detected object (segment and ROI 'Lesion <index>')"),
    ("Name", "string", "", "Name of the object's segment and ROI"),
    ("Centre R", "double", "mm", "Centroid of the object's voxels, R coordinate (world RAS)"),
    ("Centre A", "double", "mm", "Centroid of the object's voxels, A coordinate (world RAS)"),
    ("Centre S", "double", "mm", "Centroid of the object's voxels, S coordinate (world RAS)"),
    ("Size I", "double", "mm", "Extent of the refined box along the volume's I axis"),
    ("Size J", "double", "mm", "Extent of the refined box along the volume's J axis"),
    ("Size K", "double", "mm", "Extent of the refined box along the volume's K axis"),
    ("Volume", "double", "ml", "Volume of the object's voxels"),
    ("Max probability", "double", "", "Highest probability over the object's voxels"),
)
TABLE_ROLE_SEGMENTATION = "LowResDetectSegmentation"
TABLE_ROLE_ROI = "LowResDetectROI"
TABLE_ROLE_VOLUME = "LowResDetectVolume"


def segmentName(index: int) -> str:
    return f"{SEGMENT_PREFIX} {index}"


def colour(index: int) -> tuple:
    return PALETTE[(index - 1) % len(PALETTE)]


def lesionLabel(index: int) -> dict:
    return {**LESION_LABEL, "name": segmentName(index), "color": list(colour(index))}


# ---------------------------------------------------------------------- segmentation
def prepareSegmentation(segmentationNode, referenceVolume) -> None:
    """Remove the segments of a previous run ("Lesion <n>"), keep the user's own; an empty
    segmentation gets the volume as reference geometry and a binary labelmap source."""
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in list(segmentation.GetSegmentIDs()):
        if _SEGMENT_NAME.match(segmentation.GetSegment(segmentId).GetName() or ""):
            segmentation.RemoveSegment(segmentId)
    if segmentation.GetNumberOfSegments() == 0:
        segmentation_writer.setSourceRepresentationName(segmentation, segmentation_writer.BINARY_LABELMAP)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)


def writeDetectionSegments(segmentationNode, detections: Sequence, referenceVolume, shape: Sequence[int]) -> list[str]:
    """One segment per detection (its mask placed in its box on the volume's (k, j, i) grid of
    `shape`); returns the segment IDs in detection order."""
    ids = []
    full = np.zeros(tuple(shape), dtype=np.uint8)
    for detection in detections:
        full[...] = 0
        full[detection.box.slices()] = detection.mask
        ids.append(segmentation_writer.writeSegment(segmentationNode, full, referenceVolume, lesionLabel(detection.index)))
    return ids


# ---------------------------------------------------------------------- ROIs
def boxGeometry(ijkToRasMatrix: np.ndarray, extentStart: Sequence[int], box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre RAS, size (I, J, K) mm, axes 3x3 with unit columns, a rotation) of a box given in
    array order (k, j, i) on a grid whose IJK-to-RAS matrix and image extent start are given. The
    box covers whole voxels: its faces lie half a voxel outside the first and last voxel centres."""
    matrix = np.asarray(ijkToRasMatrix, dtype=float)
    start = np.asarray(extentStart, dtype=float) + np.asarray(box.start[::-1], dtype=float)
    stop = np.asarray(extentStart, dtype=float) + np.asarray(box.stop[::-1], dtype=float)
    centreIjk = (start + stop - 1.0) / 2.0
    centre = matrix[:3, :3] @ centreIjk + matrix[:3, 3]
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    axes = matrix[:3, :3] / spacing
    if np.linalg.det(axes) < 0:  # left-handed grid: a box is symmetric, flip K to get a rotation
        axes[:, 2] = -axes[:, 2]
    return centre, (stop - start) * spacing, axes


def createRoi(scene, detection, volumeNode, name: Optional[str] = None):
    """A box ROI of the detection's refined box, in the volume node's coordinates (under the
    volume's parent transform, if any), coloured like the segment."""
    import slicer

    extent = volumeNode.GetImageData().GetExtent()
    centre, size, axes = boxGeometry(ijkToRas(volumeNode), (extent[0], extent[2], extent[4]), detection.box)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name or segmentName(detection.index))
    roi.SetROIType(roi.ROITypeBox)
    objectToNode = np.eye(4)
    objectToNode[:3, :3] = axes
    objectToNode[:3, 3] = centre
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
    roi.SetCenter(*centre)
    roi.SetSize(*size)
    roi.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    roi.CreateDefaultDisplayNodes()
    display = roi.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*[c / 255.0 for c in colour(detection.index)])
    roi.SetLocked(True)  # a result: not to be dragged by accident
    return roi


# ---------------------------------------------------------------------- table
def fillTable(tableNode, detections: Sequence) -> None:
    """Replace the table's content by one row per detection (`TABLE_COLUMNS`)."""
    import vtk

    wasModifying = tableNode.StartModify()
    try:
        tableNode.RemoveAllColumns()
        table = tableNode.GetTable()
        arrays = []
        for name, kind, unit, description in TABLE_COLUMNS:
            array = {"int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray, "string": vtk.vtkStringArray}[kind]()
            array.SetName(name)
            array.SetNumberOfValues(len(detections))
            arrays.append(array)
        for row, d in enumerate(detections):
            r, a, s = d.centre_ras
            k, j, i = d.size_mm
            values = (int(d.index), segmentName(d.index), r, a, s, i, j, k, d.volume_ml, d.max_probability)
            for array, value in zip(arrays, values):
                array.SetValue(row, value)
        for array in arrays:
            table.AddColumn(array)
        for name, kind, unit, description in TABLE_COLUMNS:
            if unit:
                tableNode.SetColumnUnitLabel(name, unit)
            tableNode.SetColumnDescription(name, description)
            tableNode.SetColumnTitle(name, f"{name} ({unit})" if unit else name)
        # Titles as the view's header (as SegmentStatistics does): by default the view shows the
        # column names as an extra first row, shifting every row by one.
        tableNode.SetUseColumnTitleAsColumnHeader(True)
        table.Modified()
    finally:
        tableNode.EndModify(wasModifying)
    tableNode.SetLocked(True)  # results: not edited in the table view


def tableRows(tableNode) -> list[dict]:
    """The table's rows as dictionaries keyed by column name (for scripts and tests)."""
    table = tableNode.GetTable()
    rows = []
    for row in range(table.GetNumberOfRows()):
        values = {}
        for column in range(table.GetNumberOfColumns()):
            array = table.GetColumn(column)
            value = array.GetValue(row)
            values[array.GetName()] = value if isinstance(value, str) else float(value) if array.IsA("vtkDoubleArray") else int(value)
        rows.append(values)
    return rows


def detectionRow(tableNode, modelRow: int) -> Optional[int]:
    """The table row a table view shows at `modelRow` of its table model (a clicked index mapped
    through the view's sort proxy): the same row when the column titles are the header, else one
    less, the model's first row then showing the titles (None for that row)."""
    if tableNode.GetUseColumnTitleAsColumnHeader():
        return modelRow
    return modelRow - 1 if modelRow > 0 else None


def centreOfRow(tableNode, row: int) -> tuple[float, float, float]:
    """The RAS centre (world) stored in a row of a detections table."""
    table = tableNode.GetTable()
    if not 0 <= row < table.GetNumberOfRows():
        raise ValueError(f"table {nodeLabel(tableNode)} has no row {row} ({table.GetNumberOfRows()} rows)")
    values = []
    for name in ("Centre R", "Centre A", "Centre S"):
        array = table.GetColumnByName(name)
        if array is None:
            raise ValueError(f"table {nodeLabel(tableNode)} is not a LowResDetect detections table (no column '{name}')")
        values.append(float(array.GetValue(row)))
    return tuple(values)
