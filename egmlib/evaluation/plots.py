"""Figure helpers with one house style. Figures are saved atomically (see
:mod:`egmlib.core.runs`).

:func:`savefig` refuses a figure that breaks a rule a reader would notice and a program can check
(:func:`figure_problems`): a panel without data, an axis with tick labels but no label (its own or
a shared one's), an image or a coloured surface without a labelled colour bar. Every figure of
the notebooks goes through it, so the smoke chain of the tests checks them all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from egmlib.core.runs import atomic_path

__all__ = [
    "ATRIA_CATEGORIES",
    "LOSS_PART_TITLES",
    "MEMBRANE_VOLTAGE_LABEL",
    "RHYTHM_COLORS",
    "FigureRuleError",
    "bspm_maps_figure",
    "category_handles",
    "egm_examples_figure",
    "figure_problems",
    "filter_figure",
    "inline_backend",
    "lambda_search_figure",
    "legend_right",
    "loss_curves",
    "mesh_axes",
    "mesh_views",
    "noisy_traces_figure",
    "offset_traces",
    "psd_df_figure",
    "reconstruction_gallery",
    "savefig",
    "show_saved",
    "snapshots_figure",
    "torsos_figure",
    "training_curve_figure",
    "use_style",
    "vertical_scale_bar",
    "window_gallery",
]

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


class FigureRuleError(ValueError):
    """A figure breaks one of :func:`figure_problems`' rules; the message lists each problem."""


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _shown_tick_labels(axis) -> bool:
    """Whether an axis shows tick labels (ticks exist and their labels are on)."""
    if len(axis.get_ticklocs()) == 0:
        return False
    return any(t.get_visible() and t.label1.get_visible() for t in axis.get_major_ticks())


def _label_of_shared(ax, which: str) -> bool:
    """Whether ``ax`` or an axes sharing its ``which`` ('x' or 'y') axis has a label there."""
    group = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    for other in group.get_siblings(ax):
        if (other.get_xlabel() if which == "x" else other.get_ylabel()).strip():
            return True
    return False


def figure_problems(fig: plt.Figure) -> list[str]:
    """The checkable rules a saved figure must keep; returns one line per breach (empty: fine).

    * **no empty panel**: every visible 2-D axes with its axis on, and every 3-D axes, holds
      data (lines, images, collections or patches);
    * **labelled axes**: a 2-D axis that shows tick labels has a label, its own or one of an
      axes sharing it (a column of panels with ``sharex`` labels the bottom one);
    * **colour scales**: a figure with an image, or with a surface coloured by values, has a
      colour bar, and every colour bar has a label (quantity and unit).

    Panels are named by their title (or their position) in the messages.
    """
    from mpl_toolkits.mplot3d import Axes3D

    problems: list[str] = []
    colorbars = [ax for ax in fig.axes if _is_colorbar(ax)]
    needs_scale = False
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or _is_colorbar(ax):
            continue
        name = ax.get_title() or ax.get_title(loc="left") or f"panel {i}"
        is_3d = isinstance(ax, Axes3D)
        if not is_3d and not ax.axison:
            if ax.images:
                needs_scale = True
            continue
        if not ax.has_data():
            problems.append(f"{name!r}: an empty panel (no data)")
            continue
        if ax.images:
            needs_scale = True
        if is_3d:
            if any(getattr(c, "_egm_values", False) for c in ax.collections):
                needs_scale = True
            continue
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if _shown_tick_labels(axis) and not _label_of_shared(ax, which):
                problems.append(f"{name!r}: the {which} axis has tick labels but no label")
    if needs_scale and not colorbars:
        problems.append("an image or a value-coloured surface without a colour bar")
    for cb in colorbars:
        if not (cb.get_ylabel().strip() or cb.get_xlabel().strip()):
            problems.append("a colour bar without a label (quantity and unit)")
    return problems


def savefig(fig: plt.Figure, name: str, folder: str | Path, check: bool = True) -> Path:
    """Save ``fig`` as ``folder/name`` (PNG unless ``name`` has another suffix), atomically.

    With ``check`` (the default) the figure must pass :func:`figure_problems` first, else
    :class:`FigureRuleError` names every problem and nothing is written. PNG metadata that
    changes between runs (software version) is left out, so a figure that did not change
    produces the same bytes.

    In a notebook (matplotlib's inline backend) the saved PNG itself becomes the cell's figure
    output and the figure is closed (:func:`show_saved`), so it is drawn once: the inline
    backend would draw it again, with a tight bounding box that costs a second draw, at the end
    of the cell.
    """
    if check:
        problems = figure_problems(fig)
        if problems:
            raise FigureRuleError(f"figure {name!r}: " + "; ".join(problems))
    path = Path(folder) / (name if Path(name).suffix else f"{name}.png")
    with atomic_path(path) as tmp:
        meta = {"Software": None} if path.suffix == ".png" else None
        fig.savefig(tmp, metadata=meta)
    if path.suffix == ".png" and inline_backend():
        show_saved(fig, path)
    return path


def inline_backend() -> bool:
    """True when matplotlib draws into a notebook (the inline backend of ``matplotlib_inline``),
    where every figure left open is drawn as the cell's output when the cell ends."""
    return "backend_inline" in mpl.get_backend()


def show_saved(fig: plt.Figure, path: str | Path) -> None:
    """Show the saved PNG ``path`` of ``fig`` as a notebook output and close ``fig``.

    The output has what the inline backend would give: the PNG, the figure's ``repr`` as its
    plain text (``<Figure size ... with N Axes>``, which nbval compares in marked cells) and
    the display width of the inline backend's resolution (``figure.dpi`` instead of
    ``savefig.dpi``), so only the pixels come from the file."""
    import base64
    import struct

    from IPython.display import display

    data = Path(path).read_bytes()
    width_px = struct.unpack(">I", data[16:20])[0]  # the PNG header's IHDR width
    saved_dpi = mpl.rcParams["savefig.dpi"]  # "figure": the figure's own
    scale = float(mpl.rcParams["figure.dpi"]) / float(fig.dpi if saved_dpi == "figure"
                                                      else saved_dpi)
    display({"image/png": base64.b64encode(data).decode("ascii"), "text/plain": repr(fig)},
            raw=True, metadata={"image/png": {"width": round(width_px * scale)}})
    plt.close(fig)


def mesh_axes(ax, vertices, faces, values=None, cmap="viridis", vmin=None, vmax=None,
              elev=20.0, azim=-90.0, title="", *,
              categories: Mapping[Any, tuple[str, str]] | None = None,
              shade: bool | None = None, zoom: float | None = None,
              fit: tuple[float, float] = (0.92, 0.92)):
    """Draw a triangle mesh coloured by per-vertex ``values`` on a 3D axes (azim -90: seen
    from the front, +y being posterior); returns a ScalarMappable for a colour bar.

    ``categories`` maps each code of ``values`` to ``(name, colour)``: the surface is then
    coloured by category (a face by the code most of its vertices have) and needs a legend
    (:func:`category_handles`), not a colour bar; None is returned. ``shade`` lights the surface
    for depth (default: only a grey or categorical surface, whose colours carry no values). The
    projection is orthographic (one scale everywhere, so a drawn length can serve as a scale
    bar); ``zoom`` None scales the drawing to fill at most the fractions ``fit`` of the width
    and the height of the (square) axes, centred, with the title just above it."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    tri = vertices[faces]
    mappable = None
    if values is None or categories is not None:
        if values is None:
            rgba = np.tile(mpl.colors.to_rgba("#d9d9d9"), (len(faces), 1))
        else:
            a, b, c = np.asarray(values)[faces].T
            face_code = np.where((a == b) | (a == c), a, np.where(b == c, b, a))
            lut = {k: mpl.colors.to_rgba(col) for k, (_, col) in categories.items()}
            rgba = np.array([lut.get(k, (0.6, 0.6, 0.6, 1.0)) for k in face_code.tolist()])
        do_shade = True if shade is None else shade
    else:
        fv = np.nanmean(np.asarray(values, float)[faces], axis=1)
        norm = mpl.colors.Normalize(vmin=np.nanmin(fv) if vmin is None else vmin,
                                    vmax=np.nanmax(fv) if vmax is None else vmax)
        cm = mpl.colormaps[cmap]
        rgba = cm(norm(np.nan_to_num(fv, nan=norm.vmin)))
        mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cm)
        do_shade = False if shade is None else shade
    if do_shade:
        rgba = _shaded(rgba, tri, elev, azim)
    # edges in the face colour (thin) close the hairline seams between faces
    coll = Poly3DCollection(tri, facecolors=rgba, edgecolors=rgba, linewidths=0.3)
    if mappable is not None:
        coll._egm_values = True  # coloured by values: figure_problems asks for a colour bar
    ax.add_collection3d(coll)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_proj_type("ortho")
    ax.view_init(elev=elev, azim=azim)
    ax.set_box_aspect((1, 1, 1), zoom=1.0)
    ax.set_facecolor("none")
    x0, y0, x1, y1 = _drawn_extent(ax, vertices)
    if zoom is None:
        zoom = min(fit[0] / max(x1 - x0, 1e-9), fit[1] / max(y1 - y0, 1e-9))
    ax.set_box_aspect((1, 1, 1), zoom=zoom)
    ax.set_axis_off()
    if title:
        top = min(_drawn_extent(ax, vertices)[3] + 0.03, 1.0)  # just above the drawing
        ax.set_title(title, y=top)  # an explicit y also stops matplotlib moving the title
        ax.title.set_y(top)  # Axes3D.set_title scales y by 0.92
    return mappable


def mesh_views(vertices, faces, values=None, *, label="", cmap="viridis", vmin=None, vmax=None,
               points=None, title="", views=(("anterior", -90.0), ("posterior", 90.0)),
               categories: Mapping[Any, tuple[str, str]] | None = None,
               points_label: str = "", point_size: float = 3.0, point_color: str = "k",
               hide_occluded: bool = False, elev: float = 15.0, panel_size: float = 3.4):
    """A figure of a surface seen from several sides (x left, y posterior, z superior), coloured
    by per-vertex ``values``; ``points`` (n, 3) are drawn as dots (for example electrodes).

    ``categories`` (code -> (name, colour)) colours ``values`` by category, with a legend below
    the surface instead of a colour bar. With ``hide_occluded`` only the points in front of the
    surface in each view are drawn; ``points_label`` names them in the legend. Panels are
    squares of ``panel_size`` inches side by side (3D axes are square)."""

    n = len(views)
    fig = plt.figure(figsize=(panel_size * n, panel_size))
    # room (inches) above the drawing for the titles, below it for a legend or a colour bar;
    # the drawing is centred in its square, so it may fill the height less twice the larger
    below = 0.4 if categories is not None else (0.65 if values is not None else 0.0)
    room = max(0.7 if title else 0.35, below)
    fit = (0.92, max(1.0 - 2.0 * room / panel_size, 0.3))
    mappable, axes = None, []
    for i, (name, azim) in enumerate(views):
        ax = fig.add_axes((i / n, 0.0, 1 / n, 1.0), projection="3d")
        axes.append(ax)
        mappable = mesh_axes(ax, vertices, faces, values, cmap, vmin, vmax, elev=elev,
                             azim=azim, title=name, categories=categories, fit=fit)
        if points is not None:
            pts = np.asarray(points, float)
            if hide_occluded:
                pts = pts[_visible_points(pts, vertices, faces, elev, azim)]
            ax.scatter(*pts.T, s=point_size, c=point_color, depthshade=False, linewidths=0)
    top = max(ax.title.get_position()[1] for ax in axes)
    for ax in axes:  # the panel titles on one line
        ax.title.set_y(top)
    if mappable is not None:
        _colorbar_below(fig, axes, vertices, mappable, label)
    if categories is not None:
        handles = category_handles(categories)
        if points is not None and points_label:
            handles.append(mpl.lines.Line2D([], [], ls="none", marker="o", ms=3,
                                            color=point_color, label=points_label))
        fig.legend(handles=handles, loc="center", ncol=len(handles),  # midway below the drawing
                   bbox_to_anchor=(0.5, _drawn_bottom(fig, axes, vertices) / 2))
    if title:
        fig.suptitle(title, y=0.97)
    return fig


def torsos_figure(torsos, atria_vertices, atria_faces, max_torsos: int | None = None, *,
                  splits: Sequence[str] | None = None, scale_mm: float | None = 100.0,
                  elev: float = 10.0, azim: float = -60.0, panel_size: float = 2.6):
    """Torso variants (translucent) with the atria inside and the 64-electrode subset (dots:
    black in front, grey behind), all at one scale, with a vertical scale bar of ``scale_mm``
    (drawn in 3-D beside the first torso) and titles such as "torso 3 (test)" from ``splits``
    (one split name per torso, e.g. from the data set manifest). ``max_torsos`` None shows all."""
    import re

    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    shown = list(torsos if max_torsos is None else torsos[:max_torsos])
    lo = np.min([t.mesh.vertices.min(axis=0) for t in shown], axis=0)
    hi = np.max([t.mesh.vertices.max(axis=0) for t in shown], axis=0)
    c, r = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05
    axes = []
    fig = plt.figure(figsize=(panel_size * len(shown), panel_size))
    for i, t in enumerate(shown):
        ax = fig.add_axes((i / len(shown), 0.0, 1 / len(shown), 1.0), projection="3d",
                          computed_zorder=False)  # drawn in the order added: electrodes on top
        axes.append(ax)
        v, f = t.mesh.vertices, t.mesh.faces
        ax.add_collection3d(Poly3DCollection(v[f], facecolors="#c6dbef", edgecolors="#9ecae1",
                                             linewidths=0.2, alpha=0.15))
        ax.add_collection3d(Poly3DCollection(atria_vertices[atria_faces], facecolors="#d62728",
                                             edgecolors="none", alpha=0.9))
        pts = t.electrode_positions[t.subset64]
        front = _visible_points(pts, v, f, elev, azim)
        ax.scatter(*pts[~front].T, s=5, c="0.6", depthshade=False, linewidths=0)
        ax.scatter(*pts[front].T, s=5, c="k", depthshade=False, linewidths=0)
        ax.set(xlim=(c[0] - r, c[0] + r), ylim=(c[1] - r, c[1] + r), zlim=(c[2] - r, c[2] + r))
        ax.set_proj_type("ortho")
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect((1, 1, 1), zoom=1.25)
        ax.set_facecolor("none")
        ax.set_axis_off()
        m = re.fullmatch(r"torso(\d+)", t.name)
        name = f"torso {int(m.group(1))}" if m else t.name
        if splits is not None:
            name += f" ({splits[i]})"
        ax.set_title(name)
    if scale_mm:
        ax = axes[0]
        v = shown[0].mesh.vertices
        right = np.array([-np.sin(np.radians(azim)), np.cos(np.radians(azim)), 0.0])
        base = v.mean(axis=0) - right * (np.ptp(v @ right) / 2 + 0.12 * r)
        base[2] = v[:, 2].min()
        up = np.array([0.0, 0.0, scale_mm])  # vertical: the least foreshortened direction
        ax.plot(*np.c_[base, base + up], color="k", lw=2, solid_capstyle="butt")
        ax.text(*(base + up / 2 - right * 0.04 * r), f"{scale_mm:g} mm", ha="right",
                va="center", zdir=None)
    handles = [mpl.patches.Patch(color="#d62728", label="atria"),
               mpl.lines.Line2D([], [], ls="none", marker="o", ms=3, color="k",
                                label="electrode, front"),
               mpl.lines.Line2D([], [], ls="none", marker="o", ms=3, color="0.6",
                                label="electrode, back")]
    _pack_columns(fig, [axes], [np.r_[t.mesh.vertices, atria_vertices] for t in shown])
    fig.legend(handles=handles, loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.0))
    return fig


#: Panel titles of the generators' loss parts (each part is a weighted term of the total; the
#: weights are :class:`egmlib.generators.models.LossWeights`).
LOSS_PART_TITLES = {
    "total": "total loss (sum of the terms)",
    "mse": "w x squared error",
    "deriv_l1": "w x slope error (L1)",
    "spec_hf": "w x high-band log-spectrum error",
    "spec_spurious": "w x spurious high-band energy",
    "spec_avg": "w x mean log-spectrum error",
    "kl": "beta x KL (free bits)",
    "corr": "w x (1 - correlation)",
}


def loss_curves(history: Mapping[str, Any], parts: Sequence[str] | None = None,
                ncols: int = 4) -> plt.Figure:
    """Training (solid) and validation (dashed) curves of each loss part, one panel each, in rows
    of ``ncols``; the epoch whose weights were kept is marked in every panel. ``parts=None``: the
    total and every part that is not zero throughout (a term with weight 0, such as ``spec_avg``
    in the paper's loss, gets no panel). Titles: :data:`LOSS_PART_TITLES`."""

    from egmlib.generators.models import LOSS_PARTS

    if parts is None:
        parts = ["total", *(p for p in LOSS_PARTS if any(history["train"].get(p, [])))]
    ncols = min(ncols, len(parts))
    nrows = -(-len(parts) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.3 * nrows), squeeze=False,
                             sharex=True)
    best = history["best_epoch"] + 1
    for ax, part in zip(axes.ravel(), parts):
        epochs = np.arange(1, len(history["train"][part]) + 1)
        ax.plot(epochs, history["train"][part], color="k", lw=1, label="training")
        ax.plot(epochs, history["val"][part], color="k", lw=1, ls="--", label="validation")
        ax.axvline(best, color="#2ca02c", lw=1.2, label=f"kept epoch ({best})")
        ax.set_title(LOSS_PART_TITLES.get(part, part), loc="left", fontsize="small")
        ax.set_ylabel("loss" if part == "total" else "weighted term")
    for ax in axes.ravel()[len(parts):]:
        ax.set_visible(False)
    for col in range(ncols):  # the lowest visible panel of each column names the epochs
        visible = [axes[r, col] for r in range(nrows) if axes[r, col].get_visible()]
        visible[-1].set_xlabel("epoch")
        visible[-1].xaxis.set_tick_params(labelbottom=True)
    legend_right(fig, axes)
    fig.tight_layout()
    return fig


def _site_ticks(n_sites: int) -> list[int]:
    return [0, n_sites // 2, n_sites - 1] if n_sites > 2 else list(range(n_sites))


def window_gallery(windows, title: str = "", n: int = 6, labels: Sequence[str] | None = None,
                   vlim: float | None = None, fs: float = 100.0, n_traces: int = 8,
                   unit: str = "mV") -> plt.Figure:
    """Windows ``(n, T, C)`` (in ``unit``) as site x time images (top row, one colour scale with
    its bar) and as overlaid traces of ``n_traces`` evenly spaced sites (bottom row, one shared
    amplitude axis); time in seconds at ``fs``. ``labels``: the column titles."""

    n = min(n, len(windows))
    w_all = np.asarray(windows[:n])
    T, C = w_all.shape[1:]
    t_end = T / fs
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n + 0.9, 4.4), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 1]}, layout="constrained")
    lim = vlim or float(np.percentile(np.abs(w_all), 99.5))
    sites = np.linspace(0, C - 1, min(n_traces, C)).round().astype(int)
    image = None
    for i in range(n):
        w = w_all[i]
        image = axes[0, i].imshow(w.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                  interpolation="nearest", extent=(0, t_end, C - 0.5, -0.5))
        axes[0, i].set_title(labels[i] if labels is not None else "", fontsize="small")
        axes[1, i].plot(np.arange(T) / fs, w[:, sites], lw=0.6)
        axes[1, i].set_xlabel("time (s)")
        if i:
            axes[0, i].set_yticks([])
            axes[1, i].sharey(axes[1, 0])
            axes[1, i].tick_params(labelleft=False)
    axes[0, 0].set(ylabel="site (column)", yticks=_site_ticks(C))
    axes[1, 0].set_ylabel(f"EGM ({unit}),\n{len(sites)} sites")
    if image is not None:
        fig.colorbar(image, ax=axes[0, :].tolist(), label=f"EGM ({unit})", aspect=15)
    if title:
        fig.suptitle(title)
    return fig


def reconstruction_gallery(inputs, recons, fs: float = 100.0, row_labels: Sequence[str] = (),
                           title: str = "", n_traces: int = 3, color: str = "#1f77b4",
                           unit: str = "mV") -> plt.Figure:
    """Held-out windows beside their reconstructions, one row per window: the input and the
    reconstruction as site x time images on one colour scale (with its bar), then ``n_traces``
    sites as traces, input (black) and reconstruction (``color``) overlaid, on one amplitude axis
    per row. ``inputs``, ``recons``: ``(n, T, C)`` in ``unit``; ``row_labels``: one per window
    (e.g. its simulation)."""

    x, xr = np.asarray(inputs), np.asarray(recons)
    if x.shape != xr.shape or x.ndim != 3:
        raise ValueError(f"recons: shape {xr.shape} does not match inputs {x.shape} "
                         "(expected (n, T, C) each)")
    n, T, C = x.shape
    t = np.arange(T) / fs
    lim = float(np.percentile(np.abs(np.concatenate([x, xr])), 99.5))
    sites = np.linspace(0, C - 1, n_traces + 2).round().astype(int)[1:-1]
    fig, axes = plt.subplots(n, 2 + n_traces, figsize=(2.3 * (2 + n_traces) + 1.2, 1.9 * n + 1.2),
                             squeeze=False, sharex=True, layout="constrained")
    image = None
    for i in range(n):
        for j, (w, name) in enumerate(((x[i], "input"), (xr[i], "reconstruction"))):
            ax = axes[i, j]
            image = ax.imshow(w.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                              interpolation="nearest", extent=(0, T / fs, C - 0.5, -0.5))
            ax.set_yticks(_site_ticks(C) if j == 0 else [])
            if i == 0:
                ax.set_title(name, fontsize="small")
        label = row_labels[i] if i < len(row_labels) else f"window {i}"
        axes[i, 0].set_ylabel(f"{label}\nsite (column)")
        for j, s in enumerate(sites):
            ax = axes[i, 2 + j]
            ax.plot(t, x[i, :, s], color="k", lw=0.8, label="input")
            ax.plot(t, xr[i, :, s], color=color, lw=0.8, label="reconstruction")
            if j:
                ax.sharey(axes[i, 2])
                ax.tick_params(labelleft=False)
            else:
                ax.set_ylabel(f"EGM ({unit})")
            if i == 0:
                ax.set_title(f"site {s}", fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    if image is not None:
        fig.colorbar(image, ax=axes[:, :2].ravel().tolist(), label=f"EGM ({unit})",
                     location="bottom", shrink=0.8, aspect=30)
    fig.legend(*axes[0, 2].get_legend_handles_labels(), loc="outside lower right", ncols=2)
    if title:
        fig.suptitle(title)
    return fig


def gain_vs_k(tests: Sequence[Mapping[str, Any]], paper: Mapping[str, Any] | None = None,
              ylabel: str = "change in correlation vs k = 0") -> plt.Figure:
    """The paired change against k = 0 (mean over seeds and its 95% t interval, the rows of
    :func:`egmlib.workflow.results.paired_tests`), one panel per rhythm, one line per generator,
    with a
    zero line. ``paper`` (:data:`egmlib.workflow.results.PAPER`) draws the paper's reported change
    (with minus without augmentation) over its best k range in the panel of its rhythm,
    labelled as measured on the paper's own data."""

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


def legend_right(fig: plt.Figure, axes) -> None:
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
    """Mean over seeds with its 95% interval (error bars) against k, one panel per rhythm (SR,
    AF, then any other group such as ``"all"``), one colour per generator (named as in
    :data:`GENERATOR_NAMES`), generators side by side around each k so that their intervals do
    not overlap; ``reference`` {rhythm: value} draws a horizontal dashed line labelled
    ``reference_label``. The legend sits right of the panels, clear of the data."""

    present = {rh for gen in summary.values() for rh in gen}
    rhythms = [rh for rh in ("SR", "AF") if rh in present] + sorted(present - {"SR", "AF"})
    ks = sorted({r["k"] for gen in summary.values() for rows in gen.values() for r in rows})
    step = min(np.diff(ks)) if len(ks) > 1 else 1.0
    dodge = 0.12 * step
    fig, axes = plt.subplots(1, len(rhythms), figsize=(4.2 * len(rhythms) + 1.6, 3.2),
                             squeeze=False)
    for ax, rhythm in zip(axes[0], rhythms):
        for i, (gen, by_rhythm) in enumerate(summary.items()):
            rows = by_rhythm.get(rhythm, [])
            k = np.array([r["k"] for r in rows], float) + (i - (len(summary) - 1) / 2) * dodge
            m = np.array([r["mean"] for r in rows])
            err = np.array([[mi - r["lo"] for mi, r in zip(m, rows)],
                            [r["hi"] - mi for mi, r in zip(m, rows)]])
            ax.errorbar(k, m, yerr=err, marker="o", ms=4, lw=1, capsize=3,
                        label=GENERATOR_NAMES.get(gen, gen))
        if reference and rhythm in reference:
            ax.axhline(reference[rhythm], color="0.5", ls="--", lw=1, label=reference_label)
        ax.set_xticks(ks)
        ax.set(xlabel="k (synthetic windows added)", ylabel=ylabel)
        ax.set_title(rhythm if rhythm != "all" else "SR and AF", loc="left")
    legend_right(fig, axes)
    fig.tight_layout()
    return fig


def lambda_search_figure(validation: Mapping[str, Any], lcurve_rel: float | None = None):
    """The validation search of Tikhonov's lambda
    (:func:`egmlib.augmentation.baselines.validation_lambdas`): mean per-site correlation
    against ``lambda / s_max`` for every window and per rhythm, the chosen lambdas marked;
    ``lcurve_rel``: the L-curve's median relative lambda, drawn for comparison."""

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
    legend_right(fig, axes)
    fig.tight_layout()
    return fig


def filter_figure(rows: Sequence[Mapping[str, Any]], n_generated: int | None = None):
    """The filter ablation at a glance (:func:`egmlib.workflow.ablation.filter_table`): the
    change of test correlation against the same seed's ``k = 0`` run (mean over seeds, 95%
    two-level bootstrap interval over seeds and test simulations) for each filter, from the
    strictest (the paper's: the best k of all ``n_generated`` drawn) through the best k of a
    smaller pool to none (the first k drawn), one panel per rhythm, one marker series per k.
    Tick labels give the share of drawn windows each filter keeps, per k."""
    rows = [r for r in rows if r["reference"] == "k = 0"]
    rhythms = [rh for rh in RHYTHM_COLORS if any(r["rhythm"] == rh for r in rows)]
    ks = sorted({r["k"] for r in rows})
    pools = sorted({r["filter_pool"] for r in rows if r["filter_pool"] != r["k"]},
                   key=lambda p: (p != 0, p))
    kinds = [*pools, None]  # None: no filter (pool = k)

    def kind_of(r: Mapping[str, Any]) -> int | None:
        return None if r["filter_pool"] == r["k"] else r["filter_pool"]

    def share(k: int, pool: int | None) -> str:
        size = k if pool is None else (pool or n_generated)
        return f"{100 * k / size:.0f}%" if size else "?"

    labels = []
    for pool in kinds:
        name = ("none (first k)" if pool is None else
                f"paper's: best k of {n_generated or 'all'}" if pool == 0 else
                f"best k of {pool}")
        labels.append(f"{name}\n({', '.join(share(k, pool) for k in ks)})")
    fig, axes = plt.subplots(1, len(rhythms), figsize=(3.8 * len(rhythms) + 1.6, 3.1),
                             squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    width = 0.5 / max(len(ks), 1)
    for j, rhythm in enumerate(rhythms):
        ax = axes[0, j]
        ax.axhline(0.0, color="0.4", lw=0.8)
        for m, k in enumerate(ks):
            sel = sorted((r for r in rows if r["rhythm"] == rhythm and r["k"] == k),
                         key=lambda r: kinds.index(kind_of(r)))
            x = np.array([kinds.index(kind_of(r)) for r in sel]) + (m - (len(ks) - 1) / 2) * width
            y = np.array([r["mean_gain"] for r in sel])
            err = np.array([[r["mean_gain"] - r["boot_lo"] for r in sel],
                            [r["boot_hi"] - r["mean_gain"] for r in sel]])
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, lw=1,
                        color=cmap(0.8 * m / max(len(ks) - 1, 1)), label=f"k = {k}")
        ax.set_xticks(range(len(kinds)), labels)
        ax.set_title(rhythm, loc="left")
        ax.set_xlabel("filter (share of drawn windows kept, per k)")
        if j == 0:
            ax.set_ylabel("change in test correlation\nvs k = 0")
    legend_right(fig, axes)
    fig.tight_layout()
    return fig


# --- figures of notebook 01 (the data set) ---
# Helpers of mesh_axes, mesh_views and torsos_figure, and the figure functions of notebook 01.


#: Categories of the atrial region code (``AtrialGeometry.region``): 0 right, 1 left atrium.
ATRIA_CATEGORIES = {0: ("right atrium (RA)", "#8fb8de"), 1: ("left atrium (LA)", "#f4a582")}


def category_handles(categories: Mapping[Any, tuple[str, str]]) -> list:
    """Legend patches for ``categories`` (code -> (name, colour)) of :func:`mesh_axes`."""
    return [mpl.patches.Patch(facecolor=col, edgecolor="none", label=name)
            for name, col in categories.values()]


def _visible_points(points: NDArray, vertices: NDArray, faces: NDArray, elev: float,
                    azim: float) -> NDArray[np.bool_]:
    """Which ``points`` no triangle hides from a viewer far away at (``elev``, ``azim``) in
    degrees (matplotlib's 3-D view angles): a ray from each point towards the viewer is tested
    against every triangle (Moller-Trumbore)."""
    e, a = np.radians(elev), np.radians(azim)
    d = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    v0 = vertices[faces[:, 0]]
    e1, e2 = vertices[faces[:, 1]] - v0, vertices[faces[:, 2]] - v0
    p = np.cross(d, e2)
    det = np.einsum("fk,fk->f", e1, p)
    ok = np.abs(det) > 1e-12
    v0, e1, e2, p, inv = v0[ok], e1[ok], e2[ok], p[ok], 1.0 / det[ok]
    visible = np.ones(len(points), bool)
    for i, x in enumerate(np.asarray(points, float)):
        s = x - v0
        u = np.einsum("fk,fk->f", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("fk,fk->f", e2, q) * inv
        visible[i] = not np.any((u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-6))
    return visible


#: Colour-bar label of the Mitchell-Schaeffer membrane voltage (dimensionless).
MEMBRANE_VOLTAGE_LABEL = "membrane voltage v (dimensionless: 0 rest, 1 excited)"


def _mesh_row(fig: plt.Figure, rect: Sequence[float], vertices: NDArray, faces: NDArray,
              frames: Sequence[NDArray], titles: Sequence[str], *, cmap: str, vmin: float,
              vmax: float, elev: float, azim: float,
              fit: tuple[float, float] = (0.92, 0.92)) -> tuple[list, Any]:
    """One row of 3D panels in ``rect`` (left, bottom, width, height; figure fractions), one
    per-vertex map of ``frames`` each, on one colour scale (``fit``: see :func:`mesh_axes`);
    returns the axes and the mappable. The panel titles sit on one line just above the
    drawings."""
    left, bottom, width, height = rect
    axes, mappable = [], None
    for i, (frame, name) in enumerate(zip(frames, titles)):
        ax = fig.add_axes((left + i * width / len(frames), bottom, width / len(frames), height),
                          projection="3d")
        mappable = mesh_axes(ax, vertices, faces, frame, cmap, vmin, vmax, elev=elev,
                             azim=azim, title=name, fit=fit)
        axes.append(ax)
    top = max(ax.title.get_position()[1] for ax in axes)
    for ax in axes:
        ax.title.set_y(top)
    return axes, mappable


def _drawn_bottom(fig: plt.Figure, axes, vertices: NDArray) -> float:
    """The lowest point of ``vertices`` as drawn on any of the 3D ``axes``, in figure
    fractions (the figure must have its final size)."""
    low = 1.0
    for ax in axes:
        ax.apply_aspect()  # the square the 3D axes draws in
        y0 = _drawn_extent(ax, vertices)[1]
        pos = ax.get_position()
        low = min(low, pos.y0 + y0 * pos.height)
    return low


def _colorbar_below(fig: plt.Figure, axes, vertices: NDArray, mappable: Any, label: str):
    """A horizontal colour bar labelled ``label``, centred under the drawings of ``axes``."""
    low = _drawn_bottom(fig, axes, vertices)
    x0 = min(ax.get_position().x0 for ax in axes)
    x1 = max(ax.get_position().x1 for ax in axes)
    cax = fig.add_axes((x0 + 0.3 * (x1 - x0), max(low - 0.1, 0.12), 0.4 * (x1 - x0), 0.035))
    return fig.colorbar(mappable, cax=cax, orientation="horizontal", label=label)


def snapshots_figure(vertices: NDArray, faces: NDArray, frames: Sequence[NDArray],
                     titles: Sequence[str], *, label: str = MEMBRANE_VOLTAGE_LABEL,
                     cmap: str = "inferno", vmin: float = 0.0, vmax: float = 1.0,
                     title: str = "", elev: float = 15.0, azim: float = -90.0,
                     panel_size: float = 2.2) -> plt.Figure:
    """A row of maps of one surface (for example membrane voltage at a few instants), seen from
    one side, with one shared horizontal colour bar labelled ``label`` below the row."""
    n = len(frames)
    fig = plt.figure(figsize=(panel_size * n, panel_size))
    room = 0.65  # inches below the centred drawings for the colour bar (and above for titles)
    axes, mappable = _mesh_row(fig, (0.0, 0.0, 1.0, 1.0), vertices, faces, frames, titles,
                               cmap=cmap, vmin=vmin, vmax=vmax, elev=elev, azim=azim,
                               fit=(0.92, max(1.0 - 2.0 * room / panel_size, 0.3)))
    _colorbar_below(fig, axes, vertices, mappable, label)
    if title:
        fig.suptitle(title, y=0.98)
    return fig


def _nice_length(x: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``x`` (1 when ``x`` <= 0)."""
    if not x > 0:
        return 1.0
    k = np.floor(np.log10(x))
    for m in (5.0, 2.0, 1.0):
        if m * 10.0 ** k <= x:
            return float(m * 10.0 ** k)
    return float(10.0 ** k)


def vertical_scale_bar(ax, length: float, label: str, x: float | None = None,
                       y: float | None = None, color: str = "k") -> None:
    """A vertical scale bar of ``length`` data units with ``label`` beside it, right of the
    data at ``x`` (default: 1.5% of the x range right of it), starting at ``y`` (default: the
    bottom of the y range); drawn outside the axes clip, for traces without y ticks."""
    x0, x1 = ax.get_xlim()
    y0, _ = ax.get_ylim()
    x = x1 + 0.015 * (x1 - x0) if x is None else x
    y = y0 if y is None else y
    ax.plot([x, x], [y, y + length], color=color, lw=2, clip_on=False, solid_capstyle="butt")
    ax.text(x + 0.01 * (x1 - x0), y + length / 2, label, va="center", ha="left", color=color)


def offset_traces(ax, t: NDArray, traces: NDArray, *, color: str = "k", unit: str = "mV",
                  lw: float = 0.7, ylabel: str = "", step: float | None = None) -> float:
    """Draw ``traces`` (n, len(t)) one above the other (each centred on its median, spaced by
    ``step``, default the largest peak-to-peak), hide the meaningless y ticks and add a vertical
    scale bar in ``unit``; returns the spacing."""
    traces = np.asarray(traces, float)
    centred = traces - np.median(traces, axis=1, keepdims=True)
    if step is None:
        step = float(np.ptp(centred, axis=1).max()) or 1.0
    for k, trace in enumerate(centred):
        ax.plot(t, trace - k * step, color=color, lw=lw)
    ax.set_xlim(t[0], t[-1])
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    if ylabel:
        ax.set_ylabel(ylabel)
    bar = _nice_length(0.5 * step)
    vertical_scale_bar(ax, bar, f"{bar:g} {unit}", y=-(len(centred) - 1) * step - bar / 2)
    return step


def egm_examples_figure(t: NDArray, examples: Mapping[str, NDArray], *,
                        xlabel: str = "time after the transient (s)", unit: str = "mV",
                        colors: Mapping[str, str] = RHYTHM_COLORS) -> plt.Figure:
    """EGM traces of a few sites per rhythm (``examples``: rhythm -> (n_sites, len(t))), one
    panel per rhythm, offset one above the other at one scale for all panels, with a scale bar
    in ``unit`` per panel."""
    fig, axes = plt.subplots(len(examples), 1, figsize=(8, 2.3 * len(examples)), sharex=True,
                             squeeze=False)
    step = max(float(np.ptp(np.asarray(x, float), axis=1).max()) for x in examples.values())
    for ax, (rhythm, traces) in zip(axes[:, 0], examples.items()):
        offset_traces(ax, t, traces, color=colors.get(rhythm, "k"), unit=unit,
                      ylabel=f"{rhythm}: {len(traces)} sites", step=step or 1.0)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def psd_df_figure(f: NDArray, psd: Mapping[str, NDArray], df: Mapping[str, NDArray], *,
                  fmax: float | None = None, df_bins: NDArray | None = None,
                  unit: str = "mV", center: str = "median", decades: float = 4.0,
                  colors: Mapping[str, str] = RHYTHM_COLORS) -> plt.Figure:
    """Spectra and dominant frequencies per rhythm.

    Left: the median over windows of the PSD (``psd``: rhythm -> (n_windows, len(f)), in
    ``unit``^2/Hz; ``center="mean"`` for the mean, which heavy tails can lift above the band)
    with the band of the 25th to 75th percentile over windows, on a log axis of ``decades``
    below the highest band (a band or a trough may leave it at the bottom; the lines stay
    readable). Right: one histogram panel per rhythm of the dominant frequencies (``df``:
    rhythm -> values in Hz, ``df_bins`` default 0-12 Hz by 0.25 Hz), on one frequency axis,
    each with its own count axis so a narrow and a broad distribution are both readable."""
    fig = plt.figure(figsize=(9, 3.4), layout="constrained")
    grid = fig.add_gridspec(len(df), 2, width_ratios=(1.15, 1))
    ax = fig.add_subplot(grid[:, 0])
    fmax = float(f[-1]) if fmax is None else fmax
    f = np.asarray(f, float)
    keep = (f > 0) & (f <= fmax)
    highs = []
    for rhythm, p in psd.items():
        p = np.asarray(p, float)
        q25, q75 = np.percentile(p, [25, 75], axis=0)
        line = p.mean(axis=0) if center == "mean" else np.median(p, axis=0)
        col = colors.get(rhythm, "k")
        ax.fill_between(f, q25, q75, color=col, alpha=0.18, lw=0)
        ax.semilogy(f, line, color=col, lw=1.4, label=f"{rhythm}, {center} over windows")
        highs.append(max(np.nanmax(q75[keep]), np.nanmax(line[keep])))
    top = 10 ** np.ceil(np.log10(max(highs)) + 0.05)
    bottom = top * 10.0 ** -decades
    ax.set(xlabel="frequency (Hz)", ylabel=f"PSD ({unit}$^2$/Hz)", xlim=(0, fmax),
           ylim=(bottom, top))
    band = mpl.patches.Patch(color="0.6", alpha=0.4, lw=0, label="25th-75th percentile")
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], band], loc="upper right")
    bins = np.arange(0, 12.25, 0.25) if df_bins is None else df_bins
    first = None
    for i, (rhythm, values) in enumerate(df.items()):
        a = fig.add_subplot(grid[i, 1], sharex=first)
        first = first or a
        v = np.asarray(values, float).ravel()
        a.hist(v[np.isfinite(v)], bins=bins, color=colors.get(rhythm, "k"), alpha=0.8)
        a.set_ylabel("sites x sims")
        a.set_title(rhythm, loc="left")
        if i < len(df) - 1:
            a.tick_params(labelbottom=False)
    a.set_xlabel("dominant frequency (Hz)")
    return fig


def _pack_columns(fig: plt.Figure, rows: Sequence[Sequence[Any]], points: Sequence[NDArray],
                  gap: float = 0.12, right: float = 0.0) -> None:
    """Move the square 3D axes of ``rows`` (rows of equal length, each row a band of equal
    height filling the figure from the top) so that the drawings of a row (of ``points``, one
    array per column) sit ``gap`` (fraction of a square) apart, and narrow the figure to fit,
    plus ``right`` inches: a tall drawing leaves empty sides in its square, which its
    neighbours may then overlap."""
    widths = [_drawn_extent(ax, p)[2] - _drawn_extent(ax, p)[0]
              for row in rows for ax, p in zip(row, points)]
    _, h = fig.get_size_inches()
    side = h / len(rows)  # squares fill the height of their band
    step = max(widths) + gap
    new_w = side * (step * (len(rows[0]) - 1) + 1.0) + right
    fig.set_size_inches(new_w, h)
    for j, row in enumerate(rows):
        for i, ax in enumerate(row):
            ax.set_position((i * step * side / new_w, 1.0 - (j + 1) / len(rows), side / new_w,
                             1.0 / len(rows)))


def _times_around_peak(rms: NDArray, n: int, frac: float = 0.25) -> NDArray[np.int64]:
    """``n`` sample indices spread evenly over the stretch around the peak of ``rms`` where it
    stays above ``frac`` of the peak (widened to ``n`` samples when shorter)."""
    rms = np.asarray(rms, float)
    k = int(np.argmax(rms))
    lo, hi = k, k
    while lo > 0 and rms[lo - 1] >= frac * rms[k]:
        lo -= 1
    while hi < len(rms) - 1 and rms[hi + 1] >= frac * rms[k]:
        hi += 1
    while hi - lo + 1 < min(n, len(rms)):
        lo, hi = max(lo - 1, 0), min(hi + 1, len(rms) - 1)
    return np.unique(np.linspace(lo, hi, n).round().astype(np.int64))


def bspm_maps_figure(vertices: NDArray, faces: NDArray, maps: Mapping[str, NDArray], fs: float,
                     *, n_times: int = 4, scale: float = 1000.0, unit: str = "µV",
                     cmap: str = "RdBu_r", elev: float = 5.0, azim: float = -90.0,
                     panel_size: float = 2.4) -> plt.Figure:
    """Body-surface potential maps of one torso surface, one row per rhythm (``maps``: rhythm
    -> (T, n_vertices), at ``fs`` Hz, multiplied by ``scale`` to display in ``unit``).

    The ``n_times`` instants of a row are spread over the stretch around the peak of the RMS
    over the surface (where it stays above a quarter of the peak: the P wave of a sinus beat),
    so no panel shows a silent diastole; each row has its own symmetric colour scale and
    colour bar."""
    rows, row_axes, mappables = list(maps.items()), [], []
    fig = plt.figure(figsize=(panel_size * n_times, panel_size * len(rows)))
    for j, (rhythm, m) in enumerate(rows):
        m = np.asarray(m, float) * scale
        times = _times_around_peak(np.sqrt((m ** 2).mean(axis=1)), n_times)
        lim = float(np.abs(m[times]).max()) or 1.0
        axes, mappable = _mesh_row(
            fig, (0.0, 1.0 - (j + 1) / len(rows), 1.0, 1.0 / len(rows)), vertices, faces,
            [m[k] for k in times], [f"{rhythm}, t = {k / fs:.2f} s" for k in times],
            cmap=cmap, vmin=-lim, vmax=lim, elev=elev, azim=azim)
        row_axes.append(axes)
        mappables.append(mappable)
    _pack_columns(fig, row_axes, [vertices] * n_times, right=1.1)
    for axes, mappable, (rhythm, _) in zip(row_axes, mappables, rows):
        last = axes[-1]
        last.apply_aspect()
        pos = last.get_position()
        x1 = pos.x0 + _drawn_extent(last, vertices)[2] * pos.width
        cax = fig.add_axes((x1 + 0.02, pos.y0 + 0.2 * pos.height, 0.012, 0.55 * pos.height))
        fig.colorbar(mappable, cax=cax, label=f"{rhythm} body-surface potential ({unit})")
    return fig


def noisy_traces_figure(t: NDArray, clean: Mapping[str, NDArray], noisy: Mapping[str, NDArray],
                        *, zoom_s: float = 0.6, scale: float = 1000.0, unit: str = "µV",
                        noise_label: str = "with noise (network input)",
                        xlabel: str = "time in window (s)",
                        colors: Mapping[str, str] = RHYTHM_COLORS) -> plt.Figure:
    """Noisy against clean traces of a typical lead (the median clean RMS), one row per rhythm
    (``clean``, ``noisy``: rhythm -> (len(t), n_leads), multiplied by ``scale`` to display in
    ``unit``): the whole window, and a zoom on ``zoom_s`` seconds in its middle where the
    noise is visible. The noisy trace is drawn over the clean one; one legend above the
    panels, clear of the data."""
    fig, axes = plt.subplots(len(clean), 2, figsize=(9, 2.2 * len(clean)), squeeze=False,
                             sharex="col", gridspec_kw={"width_ratios": (2.2, 1)},
                             layout="constrained")
    mid = (t[0] + t[-1]) / 2
    near = (t >= mid - zoom_s / 2) & (t <= mid + zoom_s / 2)
    for (full, zoom), rhythm in zip(axes, clean):
        c = np.asarray(clean[rhythm], float) * scale
        z = np.asarray(noisy[rhythm], float) * scale
        rms = (c ** 2).mean(axis=0)
        lead = int(np.argsort(rms)[len(rms) // 2])
        col = colors.get(rhythm, "0.5")
        for ax, keep in ((full, slice(None)), (zoom, near)):
            ax.plot(t[keep], c[keep, lead], color="k", lw=1.4)
            ax.plot(t[keep], z[keep, lead], color=col, lw=0.7)
            ax.set_ylabel(f"BSPM ({unit})")
        full.set_title(f"{rhythm}, lead {lead} (median RMS of the {c.shape[1]} leads)",
                       loc="left")
        zoom.set_title(f"{rhythm}, lead {lead}, zoom", loc="left")
        full.axvspan(t[near][0], t[near][-1], color="0.9", lw=0, zorder=0)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    handles = [mpl.lines.Line2D([], [], color=colors.get(r, "0.5"), lw=1,
                                label=f"{r} {noise_label}") for r in clean]
    handles.append(mpl.lines.Line2D([], [], color="k", lw=1.4, label="clean (noise-free)"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles))
    return fig


def _shaded(rgba: NDArray, tri: NDArray, elev: float, azim: float) -> NDArray:
    """``rgba`` (n, 4) of the triangles ``tri`` (n, 3, 3) darkened by a soft light from the upper
    left of the viewer (brightness 0.6-1; both sides of a face are lit alike)."""
    e, a = np.radians(elev), np.radians(azim)
    view = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    light = view + 0.7 * np.array([0.0, 0.0, 1.0]) - 0.7 * right
    light /= np.linalg.norm(light)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n *= np.where(n @ view < 0, -1.0, 1.0)[:, None]  # the side facing the viewer
    out = np.array(rgba, float)
    out[:, :3] *= (0.6 + 0.4 * np.clip(n @ light, 0.0, 1.0))[:, None]
    return out


def _drawn_extent(ax, points: NDArray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of ``points`` (n, 3) as drawn on the 3D axes ``ax``, in axes fractions."""
    from mpl_toolkits.mplot3d import proj3d

    xs, ys, _ = proj3d.proj_transform(*np.asarray(points, float).T, ax.get_proj())
    frac = ax.transLimits.transform(np.c_[xs, ys])
    return (*frac.min(axis=0), *frac.max(axis=0))
