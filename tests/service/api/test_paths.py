"""Data-root containment: only regular files whose real path lies under a root's real path."""

from __future__ import annotations

import os

import pytest

from obsqc.service.api.paths import PathRefused, resolve_data_path
from obsqc.service.errors import InvalidExposureError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "night").mkdir(parents=True)
    (root / "night" / "e1.fits").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.fits").write_bytes(b"x")
    (tmp_path / "rootsibling").mkdir()
    (tmp_path / "rootsibling" / "f.fits").write_bytes(b"x")
    return root, outside


def test_a_file_under_a_root_resolves_to_its_real_path(tree):
    root, _ = tree
    assert resolve_data_path(str(root / "night" / "e1.fits"), [root]) == (root / "night" / "e1.fits").resolve()


def test_a_symlink_inside_the_root_to_a_file_inside_is_accepted(tree):
    root, _ = tree
    (root / "link.fits").symlink_to(root / "night" / "e1.fits")
    assert resolve_data_path(str(root / "link.fits"), [root]) == (root / "night" / "e1.fits").resolve()


def test_a_root_that_is_itself_a_symlink_works(tree, tmp_path):
    root, _ = tree
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert resolve_data_path(str(alias / "night" / "e1.fits"), [alias]) == (root / "night" / "e1.fits").resolve()
    assert resolve_data_path(str(root / "night" / "e1.fits"), [alias]) == (root / "night" / "e1.fits").resolve()


@pytest.mark.parametrize("make", [
    lambda root, out: str(out / "secret.fits"),                                  # plainly outside
    lambda root, out: "/etc/passwd",
    lambda root, out: str(root.parent / "rootsibling" / "f.fits"),               # shares the root's prefix
    lambda root, out: str(root),                                                  # the root itself
])
def test_paths_outside_every_root_are_forbidden(tree, make):
    root, outside = tree
    with pytest.raises(PathRefused) as info:
        resolve_data_path(make(root, outside), [root])
    assert info.value.status == 403 and info.value.error == "path_not_allowed"


def test_symlinks_escaping_the_root_are_forbidden(tree):
    root, outside = tree
    (root / "escape.fits").symlink_to(outside / "secret.fits")
    (root / "night" / "dir").symlink_to(outside)
    for p in (root / "escape.fits", root / "night" / "dir" / "secret.fits"):
        with pytest.raises(PathRefused) as info:
            resolve_data_path(str(p), [root])
        assert info.value.status == 403


@pytest.mark.parametrize("raw", [
    "", "relative/e1.fits", "e1.fits", "{root}/night/../night/e1.fits", "{root}/../outside/secret.fits",
    "{root}/night/e1.fits\x00.txt", "{root}/..",
])
def test_malformed_paths_are_bad_requests(tree, raw):
    root, _ = tree
    with pytest.raises(PathRefused) as info:
        resolve_data_path(raw.format(root=root), [root])
    assert info.value.status == 400 and info.value.error == "invalid_path"


def test_no_roots_configured_refuses_every_path(tree):
    root, _ = tree
    with pytest.raises(PathRefused) as info:
        resolve_data_path(str(root / "night" / "e1.fits"), [])
    assert info.value.status == 403 and "OBSQC_DATA_ROOTS" in info.value.message


def test_missing_files_and_non_files_are_invalid_exposures(tree):
    root, _ = tree
    with pytest.raises(InvalidExposureError) as info:
        resolve_data_path(str(root / "night" / "nope.fits"), [root])
    assert info.value.reason == "not_found"
    with pytest.raises(InvalidExposureError) as info:
        resolve_data_path(str(root / "night"), [root])
    assert info.value.reason == "not_a_file"
    os.mkfifo(root / "pipe.fits")
    with pytest.raises(InvalidExposureError) as info:
        resolve_data_path(str(root / "pipe.fits"), [root])
    assert info.value.reason == "not_a_file"


def test_a_dangling_symlink_escaping_is_forbidden_not_missing(tree):
    root, outside = tree
    (root / "dangling.fits").symlink_to(outside / "not-yet.fits")
    with pytest.raises(PathRefused):
        resolve_data_path(str(root / "dangling.fits"), [root])
