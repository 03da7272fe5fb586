"""Pictures that explain a verdict: angle histograms against the reference and a focal-plane map.

One PNG per exposure: the source-orientation histogram against the reference (§3.1); the two most
significant of the other histograms against theirs (the peak-offset histogram, the gradient angles
of the worst CCD (§3.2), the large-scale gradient angles of the worst CCD); and the focal plane
coloured by per-CCD background significance, laid out from the DETSEC cards when the file has them
and on a grid otherwise. The title names the flags and the straight-line z.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from obsqc.detectors.divergence import smoothed_distribution  # noqa: E402
from obsqc.detectors.scoring import Reference  # noqa: E402
from obsqc.service.rank import RankRecord  # noqa: E402


def _histogram_panel(ax, counts: np.ndarray, ref_p: np.ndarray, title: str, pseudocount: float,
                     span: tuple[float, float] = (-90.0, 90.0), xlabel: str = "angle from +x [deg]") -> None:
    bins = len(ref_p)
    edges = np.linspace(span[0], span[1], bins + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = (span[1] - span[0]) / bins
    n = counts.sum()
    p = smoothed_distribution(counts, pseudocount)
    ax.bar(centres, p, width=width * 0.9, color="tab:blue", alpha=0.7, label=f"exposure (N={int(n)})")
    ax.step(np.r_[edges[:-1], span[1]], np.r_[ref_p, ref_p[-1]], where="post", color="k", lw=1.5, label="reference")
    ax.set_xlim(*span)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def _focal_plane(ax, record: RankRecord) -> None:
    scores = {c.name: np.nanmax([c.background.sigma, c.large_scale.sigma, -np.inf]) for c in record.score.ccds}
    detsec = record.measured.detsec
    names = [c.name for c in record.measured.stats.ccds]
    if names and all(n in detsec for n in names):
        boxes = {n: (detsec[n][0], detsec[n][2], detsec[n][1] - detsec[n][0], detsec[n][3] - detsec[n][2]) for n in names}
    else:
        cols = math.ceil(math.sqrt(len(names))) or 1
        boxes = {n: (i % cols, -(i // cols), 0.95, 0.95) for i, n in enumerate(names)}
    cmap = plt.get_cmap("magma")
    vmax = max(5.0, np.nanmax([scores.get(n, 0.0) for n in names] or [0.0]))
    norm = matplotlib.colors.Normalize(vmin=0.0, vmax=vmax)
    for n, (x, y, w, h) in boxes.items():
        val = scores.get(n, np.nan)
        ax.add_patch(Rectangle((x, y), w, h, facecolor=cmap(norm(val)) if np.isfinite(val) else "0.8", edgecolor="k", lw=0.5))
        ax.text(x + w / 2, y + h / 2, n, ha="center", va="center", fontsize=6, color="w" if np.isfinite(val) and norm(val) < 0.6 else "k")
    xs = [b[0] for b in boxes.values()] + [b[0] + b[2] for b in boxes.values()]
    ys = [b[1] for b in boxes.values()] + [b[1] + b[3] for b in boxes.values()]
    ax.set_xlim(min(xs), max(xs))
    ax.set_ylim(min(ys), max(ys))
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("background significance per CCD [sigma]\n(max of fine and large-scale gradients)", fontsize=9)
    plt.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046)


def plot_exposure(record: RankRecord, reference: Reference, out_dir: Path, *, pseudocount: float = 0.5) -> Path:
    """Write ``<exposure_id>.png`` into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s = record.score
    stats = record.measured.stats
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _histogram_panel(
        axes[0, 0], stats.source_counts, reference.source_p,
        f"source orientation: KL={s.source.kl:.4f}, {s.source.sigma:.1f} sigma", pseudocount,
    )
    by_name = {c.name: c for c in stats.ccds}
    candidates = [
        (s.profile.sigma, lambda ax: _histogram_panel(
            ax, stats.profile_counts, reference.profile_p,
            f"source peak offset: KL={s.profile.kl:.4f}, {s.profile.sigma:.1f} sigma", pseudocount,
            span=(0.0, 1.0), xlabel="peak-to-centroid offset / rms radius (last bin: all above)")),
    ]
    fine = max(s.ccds, key=lambda c: np.nan_to_num(c.background.sigma, nan=-np.inf), default=None)
    if fine is not None and fine.background.n:
        candidates.append((s.background.sigma, lambda ax, c=fine: _histogram_panel(
            ax, by_name[c.name].gradient_counts, reference.background_p,
            f"gradients, CCD {c.name}: KL={c.background.kl:.4f}, {c.background.sigma:.1f} sigma", pseudocount)))
    large = max(s.ccds, key=lambda c: np.nan_to_num(c.large_scale.sigma, nan=-np.inf), default=None)
    if large is not None and large.large_scale.n:
        candidates.append((s.large_scale.sigma, lambda ax, c=large: _histogram_panel(
            ax, by_name[c.name].coarse_counts, reference.large_scale_p,
            f"large-scale gradients, CCD {c.name}: KL={c.large_scale.kl:.4f}, {c.large_scale.sigma:.1f} sigma",
            pseudocount)))
    candidates.sort(key=lambda item: -np.nan_to_num(item[0], nan=-np.inf))
    for ax, (_, draw) in zip((axes[0, 1], axes[1, 0]), candidates):
        draw(ax)
    for ax in (axes[0, 1], axes[1, 0])[len(candidates):]:
        ax.axis("off")
    _focal_plane(axes[1, 1], record)
    flags = ", ".join(record.flags) or "none"
    line = f"brightest straight line z={s.line.kl:.1f} ({s.line.sigma:.1f} sigma)" if s.line.n else "no line search"
    fig.suptitle(f"exposure {s.exposure_id} (rank {record.rank}; flags: {flags}; {line})", fontsize=11)
    fig.tight_layout()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s.exposure_id)
    path = out_dir / f"{safe}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
