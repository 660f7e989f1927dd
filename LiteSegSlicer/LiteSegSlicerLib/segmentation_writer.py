"""Write a labelmap computed on a volume's voxel grid into a vtkMRMLSegmentationNode.

One import per segment (a vtkOrientedImageData on exactly the reference volume's IJK grid, set with
`vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`), never slice by slice. The segment
gets its name, its colour and its terminology (SNOMED CT category and type, serialized the way
Slicer's Terminologies module does), which DICOM SEG export and the segment editor use.

Segments of the node other than the one written are never modified: a user's own segments stay
as they are, and an existing segment with the same name (a previous run) is replaced, only it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .models import PANCREAS_LABEL as PANCREAS
from .volume_bridge import ijkToRas, nodeLabel

BINARY_LABELMAP = "Binary labelmap"

# Slicer's terminology contexts: "3D Slicer General Anatomy list" holds the pancreas
# (SCT 15776009, in category SCT 123037004 Anatomical Structure) with its display colour.
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


def terminologyEntry(label: dict) -> str:
    """The serialized terminology entry of a model card label, as Slicer stores it in a segment.

    Format: context~category~type~typeModifier~regionContext~region~regionModifier, each code as
    scheme^value^meaning, e.g. "...~SCT^123037004^Anatomical Structure~SCT^15776009^Pancreas~^^~...".
    """
    category, kind = label["category"], label["type"]
    import slicer

    serialize = getattr(getattr(slicer, "vtkSlicerTerminologiesModuleLogic", None), "SerializeTerminologyEntry", None)
    if serialize is not None:  # Slicer's own serializer: the format of the running Slicer
        return serialize(
            TERMINOLOGY_CONTEXT,
            category["code"], category["scheme"], category["meaning"],
            kind["code"], kind["scheme"], kind["meaning"],
            "", "", "",
            REGION_CONTEXT, "", "", "", "", "", "",
        )
    return serializeTerminologyEntry(label)


def serializeTerminologyEntry(label: dict) -> str:
    """The same string as Slicer's SerializeTerminologyEntry, built without Slicer."""

    def code(c: dict) -> str:
        return f"{c['scheme']}^{c['code']}^{c['meaning']}"

    return "~".join([TERMINOLOGY_CONTEXT, code(label["category"]), code(label["type"]), "^^", REGION_CONTEXT, "^^", "^^"])


def sourceRepresentationName(segmentation) -> str:
    getter = getattr(segmentation, "GetSourceRepresentationName", None) or segmentation.GetMasterRepresentationName
    return getter()


def setSourceRepresentationName(segmentation, name: str) -> None:
    setter = getattr(segmentation, "SetSourceRepresentationName", None) or segmentation.SetMasterRepresentationName
    setter(name)


def hasReferenceGeometry(segmentationNode) -> bool:
    import slicer

    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return bool(segmentationNode.GetSegmentation().GetConversionParameter(parameter))


def orientedLabelmap(mask: np.ndarray, referenceVolume):
    """A vtkOrientedImageData (uint8) holding `mask` (k, j, i) on the reference volume's IJK grid."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    imageData = referenceVolume.GetImageData()
    extent = imageData.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    if tuple(mask.shape) != shape:
        raise ValueError(f"labelmap of shape {tuple(mask.shape)} does not fit the volume {nodeLabel(referenceVolume)} of shape {shape}")
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(extent)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(shape)[:] = mask
    labelmap.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToRas(referenceVolume)))
    return labelmap


def writeSegment(
    segmentationNode,
    mask: np.ndarray,
    referenceVolume,
    label: Optional[dict] = None,
) -> str:
    """Put `mask` (nonzero = inside; a (k, j, i) array on `referenceVolume`'s voxel grid) into the
    segment named `label["name"]` of `segmentationNode`, creating the segment if needed, with the
    label's colour (0-255) and terminology (category and type codes) when it has them. `label` is
    a model card label; the default is the pancreas. Returns the segment ID.

    An empty segmentation gets `referenceVolume` as its reference geometry, so that the segment is
    stored on exactly the volume's grid. A segmentation that already holds segments keeps its own
    reference geometry (the mask is then resampled into it by Slicer). Other segments are untouched.
    """
    import slicer

    label = dict(label or PANCREAS)
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        setSourceRepresentationName(segmentation, BINARY_LABELMAP)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    elif sourceRepresentationName(segmentation) != BINARY_LABELMAP:
        raise ValueError(
            f"segmentation {nodeLabel(segmentationNode)} is edited as '{sourceRepresentationName(segmentation)}', "
            "not as a binary labelmap: choose another output segmentation or create a new one"
        )
    elif not hasReferenceGeometry(segmentationNode):
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)

    binary = (np.asarray(mask) != 0).astype(np.uint8)
    labelmap = orientedLabelmap(binary, referenceVolume)

    segmentId = segmentation.GetSegmentIdBySegmentName(label["name"])
    if not segmentId:
        segmentId = segmentation.AddEmptySegment("", label["name"])
        if not segmentId:
            raise RuntimeError(f"could not add a segment to {nodeLabel(segmentationNode)}")
    segment = segmentation.GetSegment(segmentId)
    if label.get("color"):
        segment.SetColor(*[c / 255.0 for c in label["color"]])
    if label.get("category") and label.get("type"):
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminologyEntry(label))

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(labelmap, segmentationNode, segmentId, logic.MODE_REPLACE):
        raise RuntimeError(f"could not write the segment '{label['name']}' into {nodeLabel(segmentationNode)}")
    return segmentId


def placeInSubjectHierarchy(segmentationNode, referenceVolume) -> None:
    """Put the segmentation beside the volume in the subject hierarchy (under its study), which
    DICOM SEG export needs. A volume outside any study leaves the segmentation where it is."""
    scene = segmentationNode.GetScene()
    shNode = scene.GetSubjectHierarchyNode() if scene is not None else None
    if shNode is None:
        return
    volumeItem = shNode.GetItemByDataNode(referenceVolume)
    if not volumeItem:
        return
    parentItem = shNode.GetItemParent(volumeItem)
    if not parentItem or parentItem == shNode.GetSceneItemID():
        return
    segmentationItem = shNode.GetItemByDataNode(segmentationNode)
    if segmentationItem:
        shNode.SetItemParent(segmentationItem, parentItem)
    else:
        shNode.CreateItem(parentItem, segmentationNode)


def segmentTag(segment, name: str) -> str:
    """A segment's tag value ("" when absent)."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


def segmentPointsRas(segmentationNode, segmentId: str) -> np.ndarray:
    """RAS coordinates (N x 3, mm) of the voxel centres inside a segment, read from the segment's
    own stored labelmap and its image-to-world matrix (no resampling)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    labelmap = segment.GetRepresentation(BINARY_LABELMAP)
    if labelmap is None or labelmap.IsEmpty():
        return np.zeros((0, 3))
    extent = labelmap.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(shape)
    kji = np.argwhere(values == segment.GetLabelValue())
    ijk = kji[:, ::-1] + np.array([extent[0], extent[2], extent[4]])
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    matrix = slicer.util.arrayFromVTKMatrix(matrix)
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]
