"""The axial axis, rows and columns are found from the direction matrix, for any orientation."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import GEOMETRIES, phantom_image, physical_grid

from liteseg.io.geometry import slice_orientation


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_canonical_axes_run_superior_posterior_left(name):
    image = phantom_image(GEOMETRIES[name])
    orientation = slice_orientation(image)
    points = physical_grid(image)  # (z, y, x, 3) LPS
    canonical = np.stack([orientation.to_canonical(points[..., c]) for c in range(3)], axis=-1)
    steps = [np.diff(canonical, axis=axis).reshape(-1, 3).mean(axis=0) for axis in range(3)]
    # canonical axis 0 -> +S (LPS z), 1 -> +P (LPS y), 2 -> +L (LPS x): the dominant, positive component
    for axis, physical in zip(range(3), (2, 1, 0)):
        step = steps[axis]
        assert np.argmax(np.abs(step)) == physical, (name, axis, step)
        assert step[physical] > 0, (name, axis, step)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip_is_exact(name):
    array = np.random.default_rng(0).integers(0, 1000, size=(18, 24, 20)).astype(np.int16)
    image = phantom_image(GEOMETRIES[name])
    orientation = slice_orientation(image)
    canonical = orientation.to_canonical(array)
    assert canonical.shape == orientation.canonical_shape(array.shape)
    np.testing.assert_array_equal(orientation.from_canonical(canonical), array)


def test_coronal_acquisition_slices_along_the_second_index_axis():
    image = phantom_image(GEOMETRIES["coronal_acquired"], size=(20, 24, 18), spacing=(0.9, 1.3, 2.5))
    orientation = slice_orientation(image)
    # index axis j (size 24, spacing 1.3) points to S: it is the slice axis
    assert orientation.canonical_shape(sitk.GetArrayViewFromImage(image).shape)[0] == 24
    assert orientation.canonical_spacing(image)[0] == pytest.approx(1.3)


def test_real_ct_is_axial_with_flipped_rows_and_columns(sample_ct_path):
    image = sitk.ReadImage(str(sample_ct_path))  # direction diag(-1, -1, 1): RAS-like index axes
    orientation = slice_orientation(image)
    assert orientation.permutation == (0, 1, 2)
    assert orientation.flip == (False, True, True)
    assert orientation.canonical_shape(sitk.GetArrayViewFromImage(image).shape) == (112, 101, 122)


def test_two_dimensional_image_is_refused():
    from liteseg.errors import InvalidImageError

    with pytest.raises(InvalidImageError, match="3D"):
        slice_orientation(sitk.Image(8, 8, sitk.sitkInt16))


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_slices_pasted_in_slabs_equal_the_whole_canonical_volume(name):
    image = phantom_image(GEOMETRIES[name])
    orientation = slice_orientation(image)
    array_shape = sitk.GetArrayViewFromImage(image).shape
    canonical = np.random.default_rng(1).integers(0, 3, size=orientation.canonical_shape(array_shape)).astype(np.uint8)
    result = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    for first in range(0, len(canonical), 4):  # slabs of 4, the last one shorter
        orientation.paste_slices(result, first, canonical[first : first + 4])
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result), orientation.from_canonical(canonical))
