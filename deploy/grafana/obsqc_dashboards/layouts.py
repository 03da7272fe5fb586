"""Where each CCD's panel goes on the focal-plane dashboard: the cameras' layouts on Grafana's grid.

The positions come from the simulator's own focal plane (:func:`obsqc.sim.focalplane.build_focal_plane`),
so the dashboard and the FITS files (their DETSEC cards) share one definition:

* the simulator's grid presets (``tiny``, ``small``, ``eval``; CCDs ``S1``.. row by row from the bottom)
  are drawn as an image is shown, x to the right and y up;
* DECam's 62 science CCDs come from the ``decam`` preset, which places them as the real camera does
  (12 columns of 3,4,5,6,6,7 | 7,6,6,5,4,3 CCDs, pitch 33.816 mm x 63.89 mm, S1..S31 west of the axis,
  N1..N31 east). They are drawn turned by a quarter turn, as the usual DECam CCD map shows them: the long
  side of each CCD horizontal, 12 rows from S29-S31 at the top through S1-S7 and N1-N7 in the middle to
  N29-N31 at the bottom, numbers increasing to the right in every row.

Grafana's grid is 24 columns wide; a cell is ``w`` columns by ``h`` rows of 30 px. Neighbouring DECam rows
are offset by half a CCD, so a DECam CCD is 2 columns wide and the offset is one column.
"""

from __future__ import annotations

from dataclasses import dataclass

from obsqc.sim.config import INSTRUMENT, SIZE_PRESETS, SizePreset
from obsqc.sim.focalplane import build_focal_plane

GRID_COLUMNS = 24
"""Width of Grafana's dashboard grid, in columns."""


@dataclass(frozen=True)
class Cell:
    """The grid rectangle of one CCD, relative to the top-left corner of its camera's block."""

    ccd: str
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class CameraLayout:
    """One camera drawn on the grid: a title for its dashboard row and one cell per CCD."""

    key: str
    title: str
    cells: tuple[Cell, ...]

    @property
    def height(self) -> int:
        """Grid rows the block takes."""
        return max(c.y + c.h for c in self.cells)


def _cells(centres: dict[str, tuple[float, float]], w: int, h: int) -> tuple[Cell, ...]:
    """Cells from display centres ``(u, v)`` (u to the right, v downwards, any unit): one grid row per
    distinct v; horizontal positions in steps of ``pitch / w``, where ``pitch`` is the smallest distance
    between neighbours of a row, so neighbours touch and half-pitch offsets land on whole columns;
    the block is centred on the grid. Cells come in reading order (top to bottom, left to right)."""
    rows = sorted({round(v, 3) for _, v in centres.values()})
    pitches = []
    for row in rows:
        us = sorted(u for u, v in centres.values() if round(v, 3) == row)
        pitches += [b - a for a, b in zip(us, us[1:])]
    step = (min(pitches) / w) if pitches else 1.0
    u_min = min(u for u, _ in centres.values())
    xs = {name: round((u - u_min) / step) for name, (u, _) in centres.items()}
    width = max(xs.values()) + w
    if width > GRID_COLUMNS:
        raise ValueError(f"a camera {width} columns wide does not fit the {GRID_COLUMNS}-column grid")
    offset = (GRID_COLUMNS - width) // 2
    cells = (Cell(name, offset + xs[name], rows.index(round(v, 3)) * h, w, h) for name, (_, v) in centres.items())
    return tuple(sorted(cells, key=lambda c: (c.y, c.x)))


def simulator_layout(preset: SizePreset, w: int = 4, h: int = 4) -> CameraLayout:
    """A grid preset of the simulator, shown as an image (x right, y up)."""
    ccds = build_focal_plane(preset)
    centres = {c.extname: (c.center[0], -c.center[1]) for c in ccds}
    return CameraLayout(
        key=f"sim-{preset.name}",
        title=f"Simulator camera ({INSTRUMENT}), preset {preset.name}: {len(ccds)} CCDs "
              f"({preset.grid_rows} x {preset.grid_cols})",
        cells=_cells(centres, w, h))


def decam_layout(w: int = 2, h: int = 2) -> CameraLayout:
    """DECam's 62 science CCDs in their rows (see the module docstring for the orientation)."""
    ccds = build_focal_plane(SIZE_PRESETS["decam"])
    # A quarter turn: the focal-plane y (along a column of CCDs) runs to the right, x (west to east) down.
    centres = {c.extname: (c.center[1], c.center[0]) for c in ccds}
    return CameraLayout(key="decam", title="DECam: 62 science CCDs (also the simulator's decam preset)",
                        cells=_cells(centres, w, h))


def camera_layouts() -> list[CameraLayout]:
    """Every layout on the focal-plane dashboard: the simulator's grid presets, then DECam."""
    grids = [simulator_layout(p) for p in SIZE_PRESETS.values() if p.layout == "grid"]
    return [*grids, decam_layout()]
