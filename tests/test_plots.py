"""The figure rules of :func:`egmlib.evaluation.plots.figure_problems`, on hand-made figures: each
rule is broken once and kept once, and :func:`savefig` refuses a breach without writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from egmlib.evaluation import plots


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_a_labelled_line_plot_passes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set(xlabel="time (s)", ylabel="EGM (mV)")
    assert plots.figure_problems(fig) == []


def test_an_unlabelled_axis_is_named():
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    axes[0].set(xlabel="time (s)", ylabel="EGM (mV)", title="left")
    axes[1].set(title="right", xlabel="time (s)")
    assert plots.figure_problems(fig) == ["'right': the y axis has tick labels but no label"]


def test_a_shared_axis_is_labelled_once():
    fig, axes = plt.subplots(2, 1, sharex=True)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_ylabel("EGM (mV)")
    axes[1].set_xlabel("time (s)")
    assert plots.figure_problems(fig) == []
    # without sharing, the top panel's own tick labels need their own label
    fig, axes = plt.subplots(2, 1)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_ylabel("EGM (mV)")
    axes[1].set_xlabel("time (s)")
    assert plots.figure_problems(fig) == ["'panel 0': the x axis has tick labels but no label"]


def test_an_axis_without_tick_labels_needs_no_label():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set(xticks=[], ylabel="EGM (mV)")
    assert plots.figure_problems(fig) == []


def test_an_empty_panel_is_a_problem():
    fig, axes = plt.subplots(1, 2)
    axes[0].plot([0, 1], [0, 1])
    for ax in axes:
        ax.set(xlabel="x (mm)", ylabel="y (mm)")
    axes[1].set_title("nothing")
    assert plots.figure_problems(fig) == ["'nothing': an empty panel (no data)"]
    axes[1].set_axis_off()  # a hidden spare panel of a grid is fine
    assert plots.figure_problems(fig) == []


def test_an_image_needs_a_labelled_colour_bar():
    fig, ax = plt.subplots()
    im = ax.imshow(np.eye(3))
    ax.set(xlabel="time (s)", ylabel="site")
    assert plots.figure_problems(fig) == [
        "an image or a value-coloured surface without a colour bar"]
    cb = fig.colorbar(im, ax=ax)
    assert plots.figure_problems(fig) == ["a colour bar without a label (quantity and unit)"]
    cb.set_label("EGM (mV)")
    assert plots.figure_problems(fig) == []


def test_a_value_coloured_surface_needs_a_colour_bar():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    fig = plots.mesh_views(v, f, None)  # plain grey surface: no scale needed
    assert plots.figure_problems(fig) == []
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    plots.mesh_axes(ax, v, f, np.arange(4.0))
    assert plots.figure_problems(fig) == [
        "an image or a value-coloured surface without a colour bar"]
    fig = plots.mesh_views(v, f, np.arange(4.0), label="activation time (ms)")
    assert plots.figure_problems(fig) == []


def test_savefig_refuses_a_breach_and_writes_nothing(tmp_path: Path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("bad")
    with pytest.raises(plots.FigureRuleError, match=r"figure 'bad': 'bad': the x axis .*"
                                                    r"'bad': the y axis"):
        plots.savefig(fig, "bad", tmp_path)
    assert list(tmp_path.iterdir()) == []
    ax.set(xlabel="time (s)", ylabel="EGM (mV)")
    assert plots.savefig(fig, "good", tmp_path).is_file()


def test_in_a_notebook_the_saved_png_is_the_output_and_the_figure_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Under the inline backend savefig shows the file it wrote (what the inline backend
    would show: the figure's repr as plain text, its display width at figure.dpi) and closes
    the figure, so the backend does not draw it again; elsewhere the figure stays open."""
    import base64

    import IPython.display

    fig, ax = plt.subplots(figsize=(4, 2))
    ax.plot([0, 1], [0, 1])
    ax.set(xlabel="time (s)", ylabel="EGM (mV)")
    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda data, raw, metadata: shown.append((data, metadata)))
    path = plots.savefig(fig, "kept_open", tmp_path)
    assert shown == [] and plt.fignum_exists(fig.number)  # this test runs under Agg
    monkeypatch.setattr(plots.mpl, "get_backend",
                        lambda: "module://matplotlib_inline.backend_inline")
    path = plots.savefig(fig, "shown", tmp_path)
    assert not plt.fignum_exists(fig.number)
    (data, metadata), = shown
    assert base64.b64decode(data["image/png"]) == path.read_bytes()
    assert data["text/plain"] == repr(fig) == "<Figure size 400x200 with 1 Axes>"
    png_width = int.from_bytes(path.read_bytes()[16:20], "big")
    assert metadata["image/png"]["width"] == png_width  # saved at the figure's dpi here
    with matplotlib.rc_context({"savefig.dpi": 2 * fig.dpi}):  # twice the pixels, same width
        twice = plots.savefig(fig, "twice", tmp_path)
    assert int.from_bytes(twice.read_bytes()[16:20], "big") > 1.9 * png_width
    assert len(shown) == 2 and shown[1][1]["image/png"]["width"] == pytest.approx(png_width,
                                                                                  abs=2)


# --- the figure functions of notebook 01 (small synthetic inputs) ---


def _sphere(radius: float = 20.0, edge: float = 8.0, center=(0.0, 0.0, 0.0)):
    from egmlib.physics.geometry import sphere_mesh

    m = sphere_mesh(radius, edge, center)
    return m.vertices, m.faces


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_visible_points_hides_what_is_behind_a_surface():
    v = np.array([[-10.0, 0, -10], [10, 0, -10], [0, 0, 10]])
    f = np.array([[0, 1, 2]])
    pts = np.array([[0.0, -1, 0], [0, 1, 0], [30, 1, 0]])  # in front, behind, beside
    # azim -90: the viewer is on the -y side
    assert plots._visible_points(pts, v, f, 0.0, -90.0).tolist() == [True, False, True]
    assert plots._visible_points(pts, v, f, 0.0, 90.0).tolist() == [False, True, True]


def test_mesh_views_by_category_has_a_legend_and_no_colour_bar():
    v, f = _sphere()
    region = (v[:, 0] > 0).astype(int)
    pts = v * 1.05
    fig = plots.mesh_views(v, f, region, categories=plots.ATRIA_CATEGORIES, points=pts,
                           points_label="electrode", hide_occluded=True)
    assert plots.figure_problems(fig) == []
    assert {"right atrium (RA)", "left atrium (LA)", "electrode"} <= set(_legend_texts(fig))
    assert not any(plots._is_colorbar(ax) for ax in fig.axes)
    # occluded electrodes are left out: each view draws only about half of them
    drawn = [len(ax.collections[-1].get_offsets()) for ax in fig.axes]
    assert all(0 < n < len(pts) for n in drawn)


def test_snapshots_figure_has_one_labelled_colour_bar():
    v, f = _sphere()
    frames = [np.clip(v[:, 0] / 20 + k / 3, 0, 1) for k in range(3)]
    fig = plots.snapshots_figure(v, f, frames, ["0 ms", "100 ms", "200 ms"], title="SR")
    assert plots.figure_problems(fig) == []
    bars = [ax for ax in fig.axes if plots._is_colorbar(ax)]
    assert len(bars) == 1
    assert bars[0].get_xlabel() == plots.MEMBRANE_VOLTAGE_LABEL


def test_egm_examples_have_a_mv_scale_bar_and_no_y_ticks():
    t = np.arange(500) / 500.0
    rng = np.random.default_rng(0)
    fig = plots.egm_examples_figure(t, {"SR": rng.normal(size=(4, 500)),
                                        "AF": 0.5 * rng.normal(size=(4, 500))})
    assert plots.figure_problems(fig) == []
    for ax in fig.axes:
        assert len(ax.get_yticks()) == 0
        bars = [x.get_text() for x in ax.texts if x.get_text().endswith(" mV")]
        assert len(bars) == 1
    assert plots._nice_length(0.7) == 0.5
    assert plots._nice_length(3.4) == 2.0
    assert plots._nice_length(12.0) == 10.0


def test_psd_df_figure_limits_the_decades_and_names_the_statistic():
    f = np.linspace(0, 50, 201)
    rng = np.random.default_rng(1)
    psd = {"SR": 10.0 ** rng.normal(-3, 3, size=(20, 201)),  # spread over many decades
           "AF": 10.0 ** rng.normal(-2, 0.5, size=(20, 201))}
    df = {"SR": rng.normal(1.2, 0.1, size=(5, 8)), "AF": rng.normal(6, 1.5, size=(5, 8))}
    fig = plots.psd_df_figure(f, psd, df, fmax=25)
    assert plots.figure_problems(fig) == []
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi / lo == pytest.approx(1e4)
    assert "SR, median over windows" in [line.get_label() for line in ax.get_lines()]
    assert [a.get_title(loc="left") for a in fig.axes[1:]] == ["SR", "AF"]


def test_torsos_figure_names_the_split_and_has_a_scale_bar():
    from egmlib.physics.geometry import ellipsoid_mesh
    from egmlib.physics.torso import Torso

    torsos = []
    for i, a in enumerate((150.0, 170.0)):
        m = ellipsoid_mesh((a, 100.0, 280.0), 60.0)
        torsos.append(Torso(mesh=m, electrodes=np.arange(m.n_vertices),
                            subset64=np.arange(min(64, m.n_vertices)), name=f"torso{i:02d}"))
    v, f = _sphere(20.0, 10.0)
    fig = plots.torsos_figure(torsos, v, f, splits=["train", "test"])
    assert plots.figure_problems(fig) == []
    assert [ax.get_title() for ax in fig.axes] == ["torso 0 (train)", "torso 1 (test)"]
    assert "100 mm" in [t.get_text() for t in fig.axes[0].texts]


def test_bspm_maps_show_the_active_instants_with_unit_colour_bars():
    v, f = _sphere(30.0, 12.0)
    T = 50
    maps = np.zeros((T, len(v)))
    maps[28:33] = np.hanning(7)[1:-1, None] * v[:, 2] / 30 * 1e-3  # a 5-sample "P wave", mV
    assert plots._times_around_peak(np.abs(maps).mean(axis=1), 4).tolist() == [28, 29, 31, 32]
    fig = plots.bspm_maps_figure(v, f, {"SR": maps, "AF": -maps}, fs=100.0)
    assert plots.figure_problems(fig) == []
    labels = [ax.get_ylabel() for ax in fig.axes if plots._is_colorbar(ax)]
    assert labels == ["SR body-surface potential (µV)", "AF body-surface potential (µV)"]
    times = [float(ax.get_title().split("= ")[1].rstrip(" s")) for ax in fig.axes
             if not plots._is_colorbar(ax)]
    assert all(0.28 <= t <= 0.32 for t in times)


def test_noisy_traces_figure_overlays_clean_on_noisy():
    rng = np.random.default_rng(2)
    t = np.arange(100) / 100.0
    clean = {"SR": rng.normal(size=(100, 8)) * 1e-3}
    noisy = {"SR": clean["SR"] + rng.normal(size=(100, 8)) * 1e-4}
    fig = plots.noisy_traces_figure(t, clean, noisy, noise_label="with noise")
    assert plots.figure_problems(fig) == []
    assert _legend_texts(fig) == ["SR with noise", "clean (noise-free)"]
    assert all(ax.get_ylabel() == "BSPM (µV)" for ax in fig.axes)


def test_loss_curves_name_the_terms_and_mark_the_kept_epoch():
    history = {"train": {p: [3.0, 2.0, 1.5] for p in ("total", "mse", "kl", "corr")},
               "val": {p: [3.2, 2.1, 1.7] for p in ("total", "mse", "kl", "corr")},
               "best_epoch": 1}
    fig = plots.loss_curves(history, parts=["total", "mse", "kl", "corr"], ncols=2)
    assert plots.figure_problems(fig) == []
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert titles == ["total loss (sum of the terms)", "w x squared error",
                      "beta x KL (free bits)", "w x (1 - correlation)"]
    kept = [ln for ln in fig.axes[0].lines if ln.get_label() == "kept epoch (2)"]
    assert len(kept) == 1 and kept[0].get_xdata()[0] == 2  # epochs counted from 1
    fig = plots.loss_curves(history, parts=["total", "mse", "kl"], ncols=2)  # a spare panel
    assert plots.figure_problems(fig) == []
    assert sum(ax.get_visible() for ax in fig.axes) == 3


def test_window_gallery_has_a_time_axis_and_a_colour_scale():
    w = np.random.default_rng(0).normal(size=(3, 50, 12))
    fig = plots.window_gallery(w, fs=25.0, labels=["a", "b", "c"])
    assert plots.figure_problems(fig) == []
    image = fig.axes[0].images[0]
    assert image.get_extent()[:2] == [0, 2.0]  # 50 samples at 25 Hz
    assert fig.axes[-1].get_ylabel() == "EGM (mV)"  # the colour bar


def test_reconstruction_gallery_pairs_each_window_with_its_reconstruction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 40, 10))
    fig = plots.reconstruction_gallery(x, 0.5 * x, fs=20.0, row_labels=["sim 3", "sim 7"])
    assert plots.figure_problems(fig) == []
    assert fig.axes[0].get_ylabel() == "sim 3\nsite (column)"
    traces = fig.axes[2].lines
    assert np.allclose(traces[1].get_ydata(), 0.5 * traces[0].get_ydata())
    with pytest.raises(ValueError, match="does not match"):
        plots.reconstruction_gallery(x, x[:1])


def test_metric_vs_k_orders_rhythms_and_keeps_generators_apart():
    def rows(base: float) -> list[dict]:
        return [{"k": k, "mean": base + 0.001 * k, "lo": base - 0.02, "hi": base + 0.03}
                for k in (0, 6, 18)]

    summary = {"vae_s": {"all": rows(0.3), "AF": rows(0.2), "SR": rows(0.5)},
               "vae_c": {"all": rows(0.3), "AF": rows(0.2), "SR": rows(0.5)}}
    fig = plots.metric_vs_k(summary, {"SR": 0.53, "AF": 0.25}, reference_label="Tikhonov")
    axes = fig.axes[:3]
    assert [ax.get_title(loc="left") for ax in axes] == ["SR", "AF", "SR and AF"]
    assert plots.figure_problems(fig) == []
    sr = axes[0]
    xs = [line.get_xdata() for line in sr.lines if line.get_marker() == "o"]
    assert len(xs) == 2
    # the two generators sit on either side of each k, never on top of each other
    assert np.all(xs[0] < np.array([0, 6, 18])) and np.all(xs[1] > np.array([0, 6, 18]))
    assert list(sr.get_xticks()) == [0, 6, 18]
    # the error bars span the interval: lo and hi of the first point of the first generator
    segs = sr.containers[0][2][0].get_segments()
    assert segs[0][0][1] == pytest.approx(0.48) and segs[0][1][1] == pytest.approx(0.53)
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.53 for line in sr.lines)
    assert not any(line.get_linestyle() == "--" for line in axes[2].lines)  # no "all" reference
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(labels) == ["Tikhonov", "VAE-C", "VAE-S"]
