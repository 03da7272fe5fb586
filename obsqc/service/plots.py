"""Pictures that explain a verdict: angle histograms against the reference and a focal-plane map.

One PNG per exposure: the source-orientation histogram against the reference (§3.1), the
gradient-angle histograms of the worst CCDs against the reference (§3.2), and the focal plane
coloured by per-CCD background significance, laid out from the DETSEC cards when the file has them
and on a grid otherwise.
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


def _bin_centres_deg(bins: int) -> np.ndarray:
    edges = np.linspace(-90.0, 90.0, bins + 1)
    return 0.5 * (edges[:-1] + edges[1:])


def _histogram_panel(ax, counts: np.ndarray, ref_p: np.ndarray, title: str, pseudocount: float) -> None:
    bins = len(ref_p)
    centres = _bin_centres_deg(bins)
    width = 180.0 / bins
    n = counts.sum()
    p = smoothed_distribution(counts, pseudocount)
    ax.bar(centres, p, width=width * 0.9, color="tab:blue", alpha=0.7, label=f"exposure (N={int(n)})")
    ax.step(np.r_[centres - width / 2, 90.0], np.r_[ref_p, ref_p[-1]], where="post", color="k", lw=1.5, label="reference")
    ax.set_xlim(-90, 90)
    ax.set_xlabel("angle from +x [deg]")
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
    worst = s.worst_ccds(2)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _histogram_panel(
        axes[0, 0], record.measured.stats.source_counts, reference.source_p,
        f"source orientation: KL={s.source.kl:.4f}, {s.source.sigma:.1f} sigma", pseudocount,
    )
    by_name = {c.name: c for c in record.measured.stats.ccds}
    for ax, ccd_score in zip((axes[0, 1], axes[1, 0]), worst):
        _histogram_panel(
            ax, by_name[ccd_score.name].gradient_counts, reference.background_p,
            f"gradients, CCD {ccd_score.name}: KL={ccd_score.background.kl:.4f}, {ccd_score.background.sigma:.1f} sigma",
            pseudocount,
        )
    for ax in (axes[0, 1], axes[1, 0])[len(worst):]:
        ax.axis("off")
    _focal_plane(axes[1, 1], record)
    flags = ", ".join(record.flags) or "none"
    fig.suptitle(f"exposure {s.exposure_id} (rank {record.rank}; flags: {flags})", fontsize=11)
    fig.tight_layout()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s.exposure_id)
    path = out_dir / f"{safe}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
