"""Figure for the README: the STEM-EELS twin's HAADF image and spectra at three marked positions.

Run: ``.venv/bin/python examples/stem_twin_figure.py --out docs/stem_twin.png``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.clock import SystemClock
from simulators.stem_twin import StemTwinOptions, stem_twin, twin_specimen


def main() -> None:
    """Render the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/stem_twin.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = StemTwinOptions(seed=args.seed, acquisition_time_s=0.02)
    twin = stem_twin(options, SystemClock())
    layer, sn = twin_specimen(options, np.random.default_rng(args.seed))
    image = twin.acquire_image("haadf")
    # three probes: in the gap between two island particles, at the island edge, next to a dimer/chain
    c, r, kind = layer.centres_nm, layer.radii_nm, layer.kind
    island = np.flatnonzero(kind == 0)
    i = island[np.argmin(np.linalg.norm(c[island] - c[island].mean(axis=0), axis=1))]
    j = np.argmin(np.linalg.norm(np.delete(c, i, 0) - c[i], axis=1))
    j = j + (j >= i)
    edge = np.flatnonzero(kind == 1)[0]
    loose = np.flatnonzero(kind >= 2)
    k = loose[0] if loose.size else edge
    probes = np.array([(c[i] + c[j]) / 2, c[edge] + [r[edge] + 1.0, 0.0], c[k] + [0.0, r[k] + 1.0]])
    labels = ["gap inside the island", "island edge", "dimer / chain"]
    energy = twin.describe().spectral_axis.values()
    noisy = twin.measure(probes).spectra
    clean = twin.expected_counts(probes)

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_img, ax_spec = fig.subplots(1, 2, width_ratios=[1, 1.3])
    fov = options.field_of_view_nm
    ax_img.imshow(image.data, cmap="gray", extent=(0, fov, fov, 0))
    colours = ["tab:orange", "tab:cyan", "tab:pink"]
    for p, lab, col in zip(probes, labels, colours, strict=True):
        ax_img.plot(*p, "+", color=col, ms=14, mew=2.5, label=lab)
        ax_spec.plot(energy, noisy[labels.index(lab)], color=col, lw=0.8, alpha=0.6)
        ax_spec.plot(energy, clean[labels.index(lab)], color=col, lw=2, label=lab)
    ax_img.set(
        title=f"simulated HAADF, ITO monolayer ({len(r)} particles, Sn {sn.min():.2f}–{sn.max():.2f})",
        xlabel="x (nm)",
        ylabel="y (nm)",
    )
    ax_img.legend(loc="lower left", fontsize=8)
    ax_spec.set(
        title="EELS at the marked probes (thin: counts, thick: expected)",
        xlabel="energy loss (eV)",
        ylabel="counts per channel",
    )
    ax_spec.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(args.out)


if __name__ == "__main__":
    main()
