"""Real galaxies from scikit-image's Hubble deep field: shipped, found, centred, augmented, scaled."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import ndimage

from obsqc.sim.hubble import dihedral, hubble_cutouts


def test_the_image_ships_inside_scikit_image():
    assert (importlib.resources.files("skimage") / "data" / "hubble_deep_field.jpg").is_file()


@pytest.fixture(scope="module")
def plain():
    return hubble_cutouts(augment=False, return_galaxies=True)


def test_cutouts_are_non_empty_and_scaled(plain):
    x, gal = plain
    assert len(x) == len(gal.x) >= 40
    assert x.shape[1:] == (1, 96, 96) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.all(gal.area >= 30)


def test_cutouts_are_centred_on_their_galaxy(plain):
    x, _ = plain
    smooth = ndimage.gaussian_filter(x[:, 0], sigma=(0, 1.5, 1.5))
    mid = smooth[:, 24:72, 24:72].reshape(len(x), -1)
    yy, xx = np.unravel_index(mid.argmax(axis=1), (48, 48))
    off = np.hypot(yy + 24 - 48, xx + 24 - 48)
    assert np.mean(off <= 4.0) >= 0.85  # the brightest thing near the middle is (nearly always) ours
    assert np.all(x[:, 0, 44:53, 44:53].mean(axis=(1, 2)) > x[:, 0].mean(axis=(1, 2)))


def test_augmentation_gives_the_eight_symmetries_of_each_cutout(plain):
    x, _ = plain
    aug = hubble_cutouts(augment=True)
    assert len(aug) == 8 * len(x)
    assert_array_equal(aug[::8], x)
    assert_array_equal(aug[1], x[0][:, :, ::-1])
    assert_array_equal(aug[2], np.rot90(x[0], 1, axes=(1, 2)))
    group = aug[:8].reshape(8, -1)
    assert len({g.tobytes() for g in group}) == 8


def test_dihedral_of_a_marked_square():
    im = np.zeros((1, 1, 4, 4))
    im[0, 0, 0, 1] = 1.0
    marks = {tuple(np.argwhere(a[0] == 1.0)[0]) for a in dihedral(im)}
    assert len(marks) == 8


def test_three_bands_are_the_blue_green_red_channels(plain):
    x3 = hubble_cutouts(bands=("g", "r", "i"), augment=False)
    assert x3.shape == (len(plain[0]), 3, 96, 96)
    red = x3[:, 2, 40:56, 40:56].mean(axis=(1, 2)) - x3[:, 0, 40:56, 40:56].mean(axis=(1, 2))
    assert red.std() > 0.01  # galaxies differ in colour
    with pytest.raises(ValueError):
        hubble_cutouts(bands=("z",))
