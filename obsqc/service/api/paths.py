"""Where a submitted path may point: only regular files under one of ``Settings.data_roots``.

A path is refused before anything opens it:

* ``invalid_path`` (HTTP 400): empty, not absolute, holding a NUL byte, or with a ``..`` component
  (even one that would resolve inside a root: a client that sends one is confused or probing);
* ``path_not_allowed`` (HTTP 403): its real path (every symlink resolved, ``os.path.realpath``) is
  not strictly under the real path of any root, e.g. a symlink inside a root pointing outside it,
  or no roots are configured at all;

and, as a data problem recorded like any other bad file (:class:`InvalidExposureError`, HTTP 422):
``not_found`` when nothing is there, ``not_a_file`` for a directory, device, socket or pipe.

The *real* path is what gets recorded and queued, so a symlink swapped after the check cannot send
the worker elsewhere through that link.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from obsqc.service.errors import InvalidExposureError, ObsQCError

__all__ = ["PathRefused", "resolve_data_path"]


class PathRefused(ObsQCError):
    """A submitted path that the service must not open; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, *, error: str, status: int):
        super().__init__(message)
        self.message = message
        self.error = error
        self.status = status


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _is_under(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def resolve_data_path(raw: str, roots: Iterable[Path | str]) -> Path:
    """The real path of ``raw`` if it is a regular file under one of ``roots``; raises otherwise.

    Raises :class:`PathRefused` (``invalid_path``, ``path_not_allowed``) or
    :class:`InvalidExposureError` (``not_found``, ``not_a_file``).
    """
    shown = _printable(raw)
    if not raw or "\x00" in raw:
        raise PathRefused("the path is empty or holds a NUL byte", error="invalid_path", status=400)
    if not os.path.isabs(raw):
        raise PathRefused(f"{shown!r} is not an absolute path; send the full path on the shared storage",
                          error="invalid_path", status=400)
    if ".." in Path(raw).parts:
        raise PathRefused(f"{shown!r} has a '..' component; send the path without it", error="invalid_path", status=400)
    real_roots = [os.path.realpath(os.fspath(r)) for r in roots]
    if not real_roots:
        raise PathRefused("this service accepts no paths (OBSQC_DATA_ROOTS is empty); upload the file instead",
                          error="path_not_allowed", status=403)
    try:
        real = os.path.realpath(raw)
    except (OSError, ValueError) as exc:
        raise PathRefused(f"{shown!r} cannot be resolved ({exc})", error="invalid_path", status=400) from None
    if not any(_is_under(real, root) for root in real_roots):
        raise PathRefused(
            f"{shown!r} is not under an allowed data root (after resolving symlinks); "
            "allowed: " + ", ".join(real_roots),
            error="path_not_allowed", status=403,
        )
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise InvalidExposureError(f"{shown}: no such file. Check the path (and that the exposure was copied there).",
                                   reason="not_found", path=real) from None
    except OSError as exc:
        raise InvalidExposureError(f"{shown}: cannot stat the file ({exc.strerror or exc}).",
                                   reason="unreadable", path=real) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidExposureError(f"{shown}: is a directory or another non-regular file. Submit one exposure file.",
                                   reason="not_a_file", path=real)
    return Path(real)
