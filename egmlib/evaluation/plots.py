"""Figure helpers with one house style. Figures are saved atomically (see
:mod:`egmlib.core.runs`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt

from egmlib.core.runs import atomic_path

__all__ = ["RHYTHM_COLORS", "lambda_search_figure", "mesh_axes", "mesh_views", "savefig",
           "torsos_figure", "training_curve_figure", "use_style"]

#: One colour per rhythm, used by every figure.
RHYTHM_COLORS = {"SR": "#1f77b4", "AF": "#d62728"}
#: Display names of the generators in figures.
GENERATOR_NAMES = {"vae_s": "VAE-S", "vae_c": "VAE-C", "none": "no generator"}

_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the house style to matplotlib's global settings."""
    mpl.rcParams.update(_STYLE)


def savefig(fig: plt.Figure, name: str, folder: str | Path) -> Path:
    """Save ``fig`` as ``folder/name`` (PNG unless ``name`` has another suffix), atomically.

    PNG metadata that changes between runs (software version) is left out, so a figure that did
    not change produces the same bytes.
    """
    path = Path(folder) / (name if Path(name).suffix else f"{name}.png")
    with atomic_path(path) as tmp:
        meta = {"Software": None} if path.suffix == ".png" else None
        fig.savefig(tmp, metadata=meta)
    return path


def mesh_axes(ax, vertices, faces, values=None, cmap="viridis", vmin=None, vmax=None,
              elev=20.0, azim=-90.0, title=""):
    """Draw a triangle mesh coloured by per-vertex ``values`` on a 3D axes (azim -90: seen
    from the front, +y being posterior); returns a ScalarMappable for a colour bar."""
    import numpy as np
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    tri = vertices[faces]
    if values is None:
        colors = "#d9d9d9"
        coll = Poly3DCollection(tri, facecolors=colors, edgecolors="none", linewidths=0)
        mappable = None
    else:
        fv = np.nanmean(np.asarray(values, float)[faces], axis=1)
        norm = mpl.colors.Normalize(vmin=np.nanmin(fv) if vmin is None else vmin,
                                    vmax=np.nanmax(fv) if vmax is None else vmax)
        cm = mpl.colormaps[cmap]
        rgba = cm(norm(np.nan_to_num(fv, nan=norm.vmin)))
        coll = Poly3DCollection(tri, facecolors=rgba, edgecolors="none", linewidths=0)
        mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cm)
    ax.add_collection3d(coll)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1), zoom=1.5)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return mappable


def mesh_views(vertices, faces, values=None, *, label="", cmap="viridis", vmin=None, vmax=None,
               points=None, title="", views=(("anterior", -90.0), ("posterior", 90.0))):
    """A figure of a surface seen from several sides (x left, y posterior, z superior), coloured
    by per-vertex ``values``; ``points`` (n, 3) are drawn as dots (for example electrodes)."""
    fig = plt.figure(figsize=(3.6 * len(views) + 0.6, 3.6))
    mappable = None
    for i, (name, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
        mappable = mesh_axes(ax, vertices, faces, values, cmap, vmin, vmax, elev=15.0,
                              azim=azim, title=name)
        if points is not None:
            ax.scatter(*points.T, s=3, c="k", depthshade=True)
    if mappable is not None:
        fig.colorbar(mappable, ax=fig.axes, shrink=0.7, label=label)
    if title:
        fig.suptitle(title)
    return fig


def torsos_figure(torsos, atria_vertices, atria_faces, max_torsos: int = 4):
    """Torso variants (translucent) with the atria inside and the 64-electrode subset (dots)."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    shown = torsos[:max_torsos]
    fig = plt.figure(figsize=(2.8 * len(shown), 3.6))
    for i, t in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1, projection="3d")
        v, f = t.mesh.vertices, t.mesh.faces
        ax.add_collection3d(Poly3DCollection(v[f], facecolors="#c6dbef", edgecolors="#9ecae1",
                                             linewidths=0.2, alpha=0.15))
        ax.add_collection3d(Poly3DCollection(atria_vertices[atria_faces], facecolors="#d62728",
                                             edgecolors="none", alpha=0.9))
        ax.scatter(*t.electrode_positions[t.subset64].T, s=4, c="k")
        lo, hi = v.min(axis=0), v.max(axis=0)
        c, r = (lo + hi) / 2, (hi - lo).max() / 2
        ax.set(xlim=(c[0] - r, c[0] + r), ylim=(c[1] - r, c[1] + r), zlim=(c[2] - r, c[2] + r))
        ax.set_box_aspect((1, 1, 1), zoom=1.3)
        ax.view_init(elev=10, azim=-60)
        ax.set_axis_off()
        ax.set_title(t.name)
    return fig


def loss_curves(history, parts=None):
    """Training (solid) and validation (dashed) curves of each loss part, one panel each;
    ``parts=None``: the total and every part that is not zero throughout (a term with weight 0,
    such as ``spec_avg`` in the paper's loss, gets no panel)."""
    from egmlib.generators.models import LOSS_PARTS

    if parts is None:
        parts = ["total", *(p for p in LOSS_PARTS if any(history["train"].get(p, [])))]
    fig, axes = plt.subplots(1, len(parts), figsize=(2.1 * len(parts), 2.4), squeeze=False)
    axes = axes[0]
    for ax, part in zip(axes, parts):
        ax.plot(history["train"][part], color="k", lw=1, label="train")
        ax.plot(history["val"][part], color="k", lw=1, ls="--", label="validation")
        ax.axvline(history["best_epoch"], color="0.7", lw=0.8)
        ax.set(title=part, xlabel="epoch")
    axes[0].legend()
    fig.tight_layout()
    return fig


def window_gallery(windows, title="", n=6, labels=None, vlim=None):
    """Windows (n, T, C) as time x site images (top row) and as overlaid traces of 8 sites."""
    import numpy as np

    n = min(n, len(windows))
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n, 4.2), squeeze=False)
    lim = vlim or float(np.percentile(np.abs(windows[:n]), 99.5))
    for i in range(n):
        w = np.asarray(windows[i])
        axes[0, i].imshow(w.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                          interpolation="nearest")
        axes[0, i].set(xticks=[], yticks=[], title=labels[i] if labels is not None else "")
        sites = np.linspace(0, w.shape[1] - 1, 8).round().astype(int)
        axes[1, i].plot(w[:, sites], lw=0.6)
        axes[1, i].set_xticks([])
        if i:
            axes[1, i].set_yticks([])
    axes[0, 0].set_ylabel("site")
    axes[1, 0].set_ylabel("mV")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def gain_vs_k(tests: Sequence[Mapping[str, Any]], paper: Mapping[str, Any] | None = None,
              ylabel: str = "change in correlation vs k = 0") -> plt.Figure:
    """The paired change against k = 0 (mean over seeds and its 95% t interval, the rows of
    :func:`egmlib.workflow.results.paired_tests`), one panel per rhythm, one line per generator,
    with a
    zero line. ``paper`` (:data:`egmlib.workflow.results.PAPER`) draws the paper's reported change
    (with minus without augmentation) over its best k range in the panel of its rhythm,
    labelled as measured on the paper's own data."""
    import numpy as np

    rhythms = sorted({t["rhythm"] for t in tests})
    fig, axes = plt.subplots(1, len(rhythms), figsize=(4.2 * len(rhythms), 3.2), squeeze=False)
    for ax, rhythm in zip(axes[0], rhythms):
        for gen in sorted({t["generator"] for t in tests}):
            rows = sorted((t for t in tests if t["generator"] == gen and t["rhythm"] == rhythm),
                          key=lambda t: t["k"])
            k = np.array([t["k"] for t in rows])
            ax.plot(k, [t["mean_diff"] for t in rows], marker="o", ms=3, label=gen)
            ax.fill_between(k, [t["lo"] for t in rows], [t["hi"] for t in rows], alpha=0.2)
        ax.axhline(0.0, color="0.5", lw=1)
        if paper and paper.get("rhythm") == rhythm:
            gain = paper["corr_with_vae_s"] - paper["corr_without"]
            ax.hlines(gain, *paper["best_k"], color="k", lw=2,
                      label=f"paper, VAE-S ({gain:+.3f}; its own data)")
        ax.set(xlabel="k (synthetic windows added)", ylabel=ylabel, title=rhythm)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _legend_right(fig: plt.Figure, axes) -> None:
    """One legend for all ``axes`` (each label once, first handle kept), right of the panels,
    clear of the data."""
    handles: dict[str, Any] = {}
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)


def metric_vs_k(summary, reference=None, ylabel="correlation",
                reference_label="Tikhonov"):
    """Mean over seeds with its 95% interval against k, one panel per rhythm, one line per
    generator (named as in :data:`GENERATOR_NAMES`); ``reference`` {rhythm: value} draws a
    horizontal dashed line labelled ``reference_label``. The legend sits right of the panels,
    clear of the data."""
    import numpy as np

    rhythms = sorted({rh for gen in summary.values() for rh in gen})
    fig, axes = plt.subplots(1, len(rhythms), figsize=(4.2 * len(rhythms) + 1.6, 3.2),
                             squeeze=False)
    for ax, rhythm in zip(axes[0], rhythms):
        for gen, by_rhythm in summary.items():
            rows = by_rhythm.get(rhythm, [])
            k = np.array([r["k"] for r in rows])
            m = np.array([r["mean"] for r in rows])
            ax.plot(k, m, marker="o", ms=3, label=GENERATOR_NAMES.get(gen, gen))
            ax.fill_between(k, [r["lo"] for r in rows], [r["hi"] for r in rows], alpha=0.15,
                            lw=0)
        if reference and rhythm in reference:
            ax.axhline(reference[rhythm], color="0.5", ls="--", lw=1, label=reference_label)
        ax.set(xlabel="k (synthetic windows added)", ylabel=ylabel, title=rhythm)
    _legend_right(fig, axes)
    fig.tight_layout()
    return fig


def lambda_search_figure(validation: Mapping[str, Any], lcurve_rel: float | None = None):
    """The validation search of Tikhonov's lambda
    (:func:`egmlib.augmentation.baselines.validation_lambdas`): mean per-site correlation
    against ``lambda / s_max`` for every window and per rhythm, the chosen lambdas marked;
    ``lcurve_rel``: the L-curve's median relative lambda, drawn for comparison."""
    import numpy as np

    grid = np.asarray(validation["grid"])
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for group, corr in validation["corr"].items():
        color = RHYTHM_COLORS.get(group, "k")
        ax.semilogx(grid, corr, color=color, lw=1.2, label=group if group != "all" else
                    "SR and AF")
        chosen = validation["chosen"][group]
        ax.plot([chosen], [corr[int(np.argmin(np.abs(grid - chosen)))]], "o", color=color,
                ms=5)
    if lcurve_rel is not None:
        ax.axvline(lcurve_rel, color="0.5", ls=":", lw=1, label="L-curve (median, test)")
    ax.set(xlabel="relative lambda, lambda / s_max", ylabel="mean correlation (validation)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def training_curve_figure(history: Mapping[str, Any]):
    """A reconstruction run's validation correlation per epoch
    (:func:`egmlib.augmentation.augment.run_augmentation`'s ``history``), with the epoch whose
    weights were restored and the last epoch run."""
    corr = history["val_corr"]
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    ax.plot(range(1, len(corr) + 1), corr, color="k", lw=1.2, label="validation correlation")
    best = history["best_epoch"] + 1
    ax.axvline(best, color="#2ca02c", lw=1, ls="--", label=f"restored (epoch {best})")
    ax.set(xlabel="epoch", ylabel="mean correlation", xlim=(0.5, max(len(corr), 2) + 0.5))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def _arm_label(n_real_sims: int) -> str:
    return "all" if n_real_sims == 0 else str(n_real_sims)


def scarcity_figure(rows: Sequence[Mapping[str, Any]], paper_gain: float | None = None,
                    paper_rhythm: str = "SR", paper_generator: str = "vae_s"):
    """The study's answer at a glance: the change of test correlation against the same seed's
    ``k = 0`` run (mean over seeds, 95% two-level bootstrap interval over seeds and test
    simulations), against the real training simulations per rhythm (scarcest left, all right),
    one marker series per k, one row of panels per rhythm and one column per generator.
    ``rows``: :func:`egmlib.workflow.results.scarcity_table` rows of the paper's filter
    (``filter_pool == 0``), with the primary test's row added. ``paper_gain``: the paper's gain,
    drawn in its rhythm's and generator's panel (measured on its own data)."""
    import numpy as np

    rows = [r for r in rows if r.get("filter_pool", 0) == 0]
    gens = [g for g in GENERATOR_NAMES if any(r["generator"] == g for r in rows)]
    rhythms = [rh for rh in RHYTHM_COLORS if any(r["rhythm"] == rh for r in rows)]
    arms = sorted({r["n_real_sims"] for r in rows}, key=lambda n: (n == 0, n))
    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(len(rhythms), len(gens), figsize=(4.0 * len(gens) + 1.4,
                                                                2.8 * len(rhythms)),
                             squeeze=False, sharex=True, sharey="row")
    width = 0.6 / max(len(ks), 1)
    cmap = plt.get_cmap("viridis")
    for i, rhythm in enumerate(rhythms):
        for j, gen in enumerate(gens):
            ax = axes[i, j]
            ax.axhline(0.0, color="0.4", lw=0.8)
            for m, k in enumerate(ks):
                sel = sorted((r for r in rows if r["generator"] == gen and r["rhythm"] == rhythm
                              and r["k"] == k), key=lambda r: arms.index(r["n_real_sims"]))
                if not sel:
                    continue
                x = np.array([arms.index(r["n_real_sims"]) for r in sel]) + (m - (len(ks) - 1)
                                                                             / 2) * width
                y = np.array([r["mean_gain"] for r in sel])
                err = np.array([[r["mean_gain"] - r["boot_lo"] for r in sel],
                                [r["boot_hi"] - r["mean_gain"] for r in sel]])
                ax.errorbar(x, y, yerr=err, fmt="o", ms=3.5, capsize=2, lw=1,
                            color=cmap(m / max(len(ks) - 1, 1)), label=f"k = {k}")
            if paper_gain is not None and rhythm == paper_rhythm and gen == paper_generator:
                ax.axhline(paper_gain, color="k", ls=":", lw=1.2,
                           label=f"paper's gain ({paper_gain:+.3f}, its data)")
            ax.set_title(f"{GENERATOR_NAMES.get(gen, gen)}, {rhythm}", loc="left")
            ax.set_xticks(range(len(arms)), [_arm_label(n) for n in arms])
            if i == len(rhythms) - 1:
                ax.set_xlabel("real training simulations per rhythm")
            if j == 0:
                ax.set_ylabel("change in test correlation\nvs k = 0")
    _legend_right(fig, axes)
    fig.tight_layout()
    return fig
