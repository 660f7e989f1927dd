"""Tests of liteseg.components on small hand-checkable masks."""

import numpy as np
import pytest

from liteseg.components import (
    Box,
    Component,
    component_boxes,
    label_components,
    largest_component,
    union_box,
)
from liteseg.errors import LiteSegError


def two_objects() -> np.ndarray:
    """A 10x12x14 (z, y, x) mask with a 2x3x4 block and a single voxel."""
    mask = np.zeros((10, 12, 14), dtype=np.uint8)
    mask[1:3, 2:5, 3:7] = 1  # 24 voxels
    mask[7, 9, 12] = 1
    return mask


def test_two_objects_give_two_exact_boxes() -> None:
    components = component_boxes(two_objects())
    assert [c.label for c in components] == [1, 2]
    by_size = sorted(components, key=lambda c: c.voxel_count)
    assert by_size[0].voxel_count == 1
    assert by_size[0].box == Box((7, 9, 12), (8, 10, 13))
    assert by_size[1].voxel_count == 24
    assert by_size[1].box == Box((1, 2, 3), (3, 5, 7))
    assert by_size[1].box.shape == (2, 3, 4)


def test_box_cuts_out_the_object() -> None:
    mask = two_objects()
    big = max(component_boxes(mask), key=lambda c: c.voxel_count)
    crop = mask[big.box.slices()]
    assert crop.shape == (2, 3, 4)
    assert crop.all()


def test_margin_grows_box_and_is_clipped_at_borders() -> None:
    components = {c.voxel_count: c for c in component_boxes(two_objects(), margin=2)}
    assert components[24].box == Box((0, 0, 1), (5, 7, 9))  # z and y start clipped at 0
    assert components[1].box == Box((5, 7, 10), (10, 12, 14))  # stops clipped at the shape


def test_margin_per_axis() -> None:
    components = {c.voxel_count: c for c in component_boxes(two_objects(), margin=(0, 1, 3))}
    assert components[24].box == Box((1, 1, 0), (3, 6, 10))


def test_diagonal_voxels_join_only_with_full_connectivity_3d() -> None:
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1, 1, 1] = True
    mask[2, 2, 2] = True  # touches the first only by a corner
    labels, count = label_components(mask, full_connectivity=True)
    assert count == 1
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1}
    assert label_components(mask, full_connectivity=False)[1] == 2
    assert len(component_boxes(mask, full_connectivity=True)) == 1
    assert [c.box for c in component_boxes(mask, full_connectivity=False)] == [
        Box((1, 1, 1), (2, 2, 2)),
        Box((2, 2, 2), (3, 3, 3)),
    ]


def test_diagonal_pixels_2d() -> None:
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    mask[4, 0:3] = 1
    full = component_boxes(mask)
    assert [(c.voxel_count, c.box) for c in full] == [
        (2, Box((1, 1), (3, 3))),
        (3, Box((4, 0), (5, 3))),
    ]
    assert len(component_boxes(mask, full_connectivity=False)) == 3


def test_nonbinary_values_are_foreground() -> None:
    mask = np.zeros((3, 5), dtype=np.int16)
    mask[1, 1] = 2
    mask[1, 2] = 7
    labels, count = label_components(mask)
    assert count == 1
    assert labels[1, 1] == labels[1, 2] == 1


def test_empty_mask_gives_no_components() -> None:
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    assert component_boxes(mask, margin=3) == []
    labels, count = label_components(mask)
    assert count == 0
    assert not labels.any()


def test_invalid_masks_and_margins() -> None:
    with pytest.raises(LiteSegError, match="2D or 3D"):
        component_boxes(np.ones(5))
    with pytest.raises(LiteSegError, match="2D or 3D"):
        label_components(np.ones((2, 2, 2, 2)))
    with pytest.raises(LiteSegError, match="non-negative"):
        component_boxes(two_objects(), margin=-1)
    with pytest.raises(LiteSegError, match="3 values"):
        component_boxes(two_objects(), margin=(1, 2))


def test_box_scaled() -> None:
    box = Box((1, 2, 3), (4, 5, 6))
    assert box.scaled(2, (100, 100, 100)) == Box((2, 4, 6), (8, 10, 12))
    assert box.scaled((1, 2, 4), (100, 9, 100)) == Box((1, 4, 12), (4, 9, 24))
    assert box.scaled(4, (10, 10, 10)) == Box((4, 8, 10), (10, 10, 10))
    with pytest.raises(LiteSegError):
        box.scaled(0, (10, 10, 10))
    with pytest.raises(LiteSegError):
        box.scaled(2, (10, 10))


def test_box_validation_and_numpy_ints() -> None:
    box = Box(np.array([0, 1]), np.array([2, 3]))
    assert box.start == (0, 1) and type(box.start[0]) is int
    assert box.slices() == (slice(0, 2), slice(1, 3))
    with pytest.raises(LiteSegError):
        Box((3, 0), (2, 1))
    with pytest.raises(LiteSegError):
        Box((0,), (1, 1))


def test_largest_component() -> None:
    result = largest_component(two_objects())
    assert result.dtype == np.uint8
    assert int(result.sum()) == 24
    assert result[1:3, 2:5, 3:7].all()
    assert result[7, 9, 12] == 0


def test_largest_component_depends_on_connectivity() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    for i in range(5):
        mask[i, i] = 1  # diagonal of 5: one component only with full connectivity
    mask[7, 0:4] = 1  # straight line of 4
    full = largest_component(mask, full_connectivity=True)
    assert int(full.sum()) == 5 and full[2, 2] == 1 and full[7, 0] == 0
    face = largest_component(mask, full_connectivity=False)
    assert int(face.sum()) == 4 and face[7, 0:4].all()


def test_largest_component_of_empty_mask_is_empty() -> None:
    result = largest_component(np.zeros((2, 3, 4), dtype=bool))
    assert result.shape == (2, 3, 4) and result.dtype == np.uint8 and not result.any()


def test_union_box() -> None:
    assert union_box([]) is None
    boxes = [Box((1, 5, 2), (3, 6, 4)), Box((0, 7, 3), (2, 9, 5))]
    assert union_box(boxes) == Box((0, 5, 2), (3, 9, 5))
    components = component_boxes(two_objects())
    assert union_box([c.box for c in components]) == Box((1, 2, 3), (8, 10, 13))
    with pytest.raises(LiteSegError):
        union_box([Box((0, 0), (1, 1)), Box((0, 0, 0), (1, 1, 1))])


def test_component_is_frozen() -> None:
    component = component_boxes(two_objects())[0]
    assert isinstance(component, Component)
    with pytest.raises(AttributeError):
        component.label = 5  # type: ignore[misc]
