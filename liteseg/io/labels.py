"""The labels the bundled and trained models write, in Slicer's terminology (SNOMED CT codes,
category and type) with their display colours: the one copy the engine, the trainers' model cards
and the Slicer modules share."""

from __future__ import annotations

ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}

PANCREAS_LABEL = {
    "value": 1,
    "name": "Pancreas",
    "color": [249, 180, 111],
    "category": ANATOMICAL_STRUCTURE,
    "type": {"scheme": "SCT", "code": "15776009", "meaning": "Pancreas"},
}

LIVER_LABEL = {
    "value": 1,
    "name": "Liver",
    "color": [221, 130, 101],
    "category": ANATOMICAL_STRUCTURE,
    "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"},
}

LESION_LABEL = {
    "value": 1,
    "name": "Lesion",
    "color": [255, 97, 64],
    "category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
    "type": {"scheme": "SCT", "code": "52988006", "meaning": "Lesion"},
}
