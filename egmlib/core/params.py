"""Notebook parameters: one schema, validated before any heavy work.

Every notebook starts with a single code cell tagged ``parameters`` that assigns plain values
(papermill injects overrides right after it). The next cell calls :func:`resolve`, which

* collects this notebook's parameters from the notebook's namespace,
* checks each one against its :class:`Spec` (type, range or allowed values),
* rejects plain-valued names that no notebook knows (a typo in ``-p`` or in a YAML profile),
* runs the notebook's cross-parameter checks (for example ``M <= N``),

and stops with a :class:`ParameterError` that names the parameter and what is allowed.

Profiles (``params/smoke.yaml``, ``params/paper.yaml``) are flat YAML files shared by every
notebook, so a name that belongs to another notebook is accepted and ignored. The embedded
default profile is the notebooks' own parameter cells; ``tests/test_params.py`` checks that they
equal the defaults in :data:`SPECS`, so the two never drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "NOTEBOOKS",
    "NOTEBOOK_DEFAULTS",
    "SPECS",
    "ParameterError",
    "Params",
    "Spec",
    "default_value",
    "defaults",
    "load_profile",
    "resolve",
    "validate",
]


class ParameterError(ValueError):
    """A notebook or library parameter is missing, of the wrong type, out of range or unknown."""


@dataclass(frozen=True)
class Spec:
    """What one parameter may be.

    Attributes:
        default: the embedded default profile's value (what the notebooks' parameter cells hold).
        kind: ``int``, ``float``, ``str``, ``bool`` or ``list``. An ``int`` is accepted for a float.
        low, high: inclusive numeric bounds (``None``: unbounded). For lists they bound each item.
        choices: the allowed values, when the parameter is an enumeration.
        item: for ``kind=list``, the type of each item.
        help: one line shown in error messages and in ``papermill --help-notebook``.
    """

    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    help: str = ""

    def allowed(self) -> str:
        """A human description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = self.kind.__name__ if self.kind is not list else f"list of {self.item.__name__}"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"{what} >= {self.low}"
        if self.high is not None:
            return f"{what} <= {self.high}"
        return what

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` (ints promoted to float where a float is asked) or raise."""
        if self.kind is list:
            if not isinstance(value, (list, tuple)):
                raise ParameterError(
                    f"parameter {name!r}: got {value!r}; allowed: {self.allowed()}")
            return [Spec(None, self.item, self.low, self.high).check(f"{name}[{i}]", v)
                    for i, v in enumerate(value)]
        ok_type = isinstance(value, self.kind) and not (
            self.kind in (int, float) and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok_type = float(value), True
        if not ok_type:
            raise ParameterError(
                f"parameter {name!r}: got {value!r} ({type(value).__name__}); "
                f"allowed: {self.allowed()}")
        if self.kind is float and not math.isfinite(value):
            raise ParameterError(f"parameter {name!r}: got {value!r}; allowed: {self.allowed()}")
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"parameter {name!r}: got {value!r}; allowed: {self.allowed()}")
        below = self.low is not None and value < self.low
        if below or (self.high is not None and value > self.high):
            raise ParameterError(f"parameter {name!r}: got {value!r}; allowed: {self.allowed()}")
        return value


PROFILES = ("smoke", "default", "paper")

#: Every parameter any notebook takes. Defaults are the embedded default profile.
SPECS: dict[str, Spec] = {
    # --- run bookkeeping -----------------------------------------------------------------------
    "profile": Spec("default", str, choices=PROFILES,
                    help="label of the parameter set; 'default' writes figures to figures/"),
    "run_dir": Spec("", str, help="run directory; '' means runs/<profile>"),
    "seed": Spec(0, int, 0, 2**31 - 1, help="master seed of the notebook"),
    "rebuild": Spec(False, bool, help="rebuild artifacts even if identical ones exist"),
    # --- 01_data: geometry ---------------------------------------------------------------------
    "mesh_edge_mm": Spec(2.0, float, 1.0, 8.0, help="target mean edge of the atrial mesh (mm)"),
    "n_rec": Spec(256, int, 16, 4096, help="recording sites (paper: 2048)"),
    "electrode_offset_mm": Spec(1.5, float, 0.5, 5.0,
                                help="electrode height above the tissue along the normal (mm)"),
    # --- 01_data: simulation -------------------------------------------------------------------
    "n_sr": Spec(48, int, 1, 10_000, help="sinus-rhythm simulations"),
    "n_af": Spec(48, int, 1, 10_000, help="atrial-fibrillation simulations"),
    "dt_ms": Spec(0.1, float, 0.01, 0.2, help="time step of the explicit solver (ms)"),
    "transient_s": Spec(1.0, float, 0.0, 10.0, help="initial simulated time discarded (s)"),
    "record_s": Spec(6.0, float, 0.5, 600.0, help="simulated time kept per simulation (s)"),
    "batch": Spec(24, int, 1, 256, help="simulations advanced together as columns of one state"),
    "fs": Spec(100.0, float, 10.0, 500.0, help="sampling rate of the network windows (Hz)"),
    "T": Spec(400, int, 16, 4000, help="window length in samples at fs (paper: 400)"),
    "hop_s": Spec(0.5, float, 0.05, 60.0, help="hop between consecutive windows (s)"),
    "n_torsos": Spec(4, int, 1, 50, help="torso variants (the paper used ten transfer matrices)"),
    "test_torsos": Spec(1, int, 0, 49, help="torsos held out for testing (the last ones)"),
    "torso_edge_mm": Spec(27.5, float, 10.0, 60.0, help="mean edge of the torso mesh (mm)"),
    "snr_db": Spec(20.0, float, -10.0, 80.0, help="SNR of the white noise added to BSPMs (dB)"),
    "test_fraction": Spec(0.2, float, 0.0, 0.9, help="fraction of simulations held out for test"),
    "val_fraction": Spec(0.15, float, 0.0, 0.9,
                         help="fraction of simulations held out for validation"),
    # --- 02_vae_s / 03_vae_c: generators ---------------------------------------------------
    "latent": Spec(64, int, 2, 1024, help="latent dimension (paper: 250)"),
    "epochs": Spec(25, int, 1, 10_000, help="maximum training epochs"),
    "batch_size": Spec(8, int, 1, 1024, help="training batch size"),
    "lr": Spec(3e-3, float, 1e-6, 1.0, help="Adam learning rate (x0.95 per epoch)"),
    "beta_max": Spec(1e-3, float, 0.0, 10.0, help="final KL weight after the linear warm-up"),
    "spec_avg": Spec(0.0, float, 0.0, 10.0,
                     help="weight of the time-averaged log-spectrum loss term (not in the "
                          "paper; 0: the paper's loss)"),
    "warmup_epochs": Spec(5, int, 0, 10_000, help="epochs of linear beta warm-up"),
    "patience": Spec(6, int, 1, 10_000, help="early stopping: epochs without validation gain"),
    "n_generate": Spec(200, int, 1, 100_000, help="windows generated (paper: 200)"),
    "n_keep": Spec(25, int, 1, 100_000, help="windows kept after filtering (paper: 25)"),
    "gen_mode": Spec("prior", str, choices=("prior", "guided"),
                     help="z from the prior, or from a Gaussian fitted to training encodings"),
    "device": Spec("cpu", str, choices=("cpu", "cuda"), help="torch device for training"),
    # --- 04_fidelity -----------------------------------------------------------------------
    "n_eval": Spec(100, int, 2, 100_000,
                   help="generated windows per generator and rhythm for the fidelity metrics"),
    # --- 05_augment / 06_sweep -------------------------------------------------------------
    "k": Spec(18, int, 0, 100_000, help="synthetic EGM windows added to the training set"),
    "generator": Spec("vae_s", str, choices=("none", "vae_s", "vae_c"),
                      help="where the synthetic windows come from ('none': k must be 0)"),
    "out_dir": Spec("", str, help="folder of this run's result.json; '' means "
                                  "<run_dir>/05_augment/<generator>_k<k>_s<seed>"),
    "recon_epochs": Spec(30, int, 1, 10_000, help="maximum epochs of the reconstruction network"),
    "recon_patience": Spec(5, int, 1, 10_000, help="early stopping patience (reconstruction)"),
    "sweep_dir": Spec("", str, help="folder of the sweep's runs; '' means <run_dir>/sweep"),
    "range_k": Spec([14, 16, 18], list, 1, 100_000, item=int,
                    help="k values tested together against k = 0, fixed in advance "
                         "(paper: gains at k = 14-18)"),
}

#: Which parameters each notebook takes, in the order of its parameters cell.
NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "01_data": ("profile", "run_dir", "seed", "rebuild", "mesh_edge_mm", "n_rec",
                "electrode_offset_mm", "n_sr", "n_af", "dt_ms", "transient_s", "record_s",
                "batch", "fs", "T", "hop_s", "n_torsos", "test_torsos", "torso_edge_mm",
                "snr_db", "test_fraction", "val_fraction"),
    "02_vae_s": ("profile", "run_dir", "seed", "latent", "epochs", "batch_size", "lr",
                 "beta_max", "spec_avg", "warmup_epochs", "patience", "n_generate", "n_keep",
                 "gen_mode", "device"),
    "03_vae_c": ("profile", "run_dir", "seed", "latent", "epochs", "batch_size", "lr",
                 "beta_max", "spec_avg", "warmup_epochs", "patience", "n_generate", "n_keep",
                 "gen_mode", "device"),
    "04_fidelity": ("profile", "run_dir", "seed", "n_eval", "gen_mode"),
    "05_augment": ("profile", "run_dir", "seed", "k", "generator", "out_dir", "snr_db",
                   "recon_epochs", "recon_patience", "device"),
    "06_sweep": ("profile", "run_dir", "sweep_dir", "range_k"),
}


#: Defaults that differ from the schema's for one notebook. VAE-C trains on SR and AF windows,
#: twice VAE-S's, so 15 of its epochs take about as many optimiser steps (and as long) as 30 of
#: VAE-S's; 25 / 15 keep each default model at about 4 minutes on 2 cores.
#: VAE-C adds the time-averaged log-spectrum term (``spec_avg``, not in the paper): with the
#: paper's loss alone its AF output was a low-amplitude blur and generated AF windows had an
#: SR-like dominant frequency (1.25 Hz against 6.2 Hz real, autocorrelation DF, 15 epochs,
#: seed 0); with weight 0.15, 6.27 Hz against 6.22, at the cost of SR reconstruction correlation
#: 0.22 instead of 0.29; weight 0.5 gave 6.27 Hz but SR correlation 0.02 (measured 2026-11-24).
NOTEBOOK_DEFAULTS: dict[str, dict[str, Any]] = {"03_vae_c": {"epochs": 15, "spec_avg": 0.15}}


def default_value(notebook: str, name: str) -> Any:
    """The default of parameter ``name`` in ``notebook`` (:data:`NOTEBOOK_DEFAULTS` first)."""
    return NOTEBOOK_DEFAULTS.get(notebook, {}).get(name, SPECS[name].default)


def _check_01(p: Mapping[str, Any]) -> None:
    window_s = p["T"] / p["fs"]
    if window_s > p["record_s"] + 1e-9:
        raise ParameterError(
            f"parameters 'T' and 'fs': a window of T/fs = {window_s:g} s does not fit in "
            f"record_s = {p['record_s']:g} s; allowed: T <= fs * record_s")
    if p["test_fraction"] + p["val_fraction"] >= 0.9:
        raise ParameterError("parameters 'test_fraction' + 'val_fraction' must stay below 0.9")
    if p["test_torsos"] >= p["n_torsos"]:
        raise ParameterError(f"parameter 'test_torsos': got {p['test_torsos']}; allowed: fewer "
                             f"than n_torsos = {p['n_torsos']} (training needs a torso)")
    if 500.0 % p["fs"] > 1e-9 and abs(500.0 % p["fs"] - p["fs"]) > 1e-9:
        raise ParameterError(f"parameter 'fs': got {p['fs']!r}; allowed: a divisor of 500 Hz "
                             "(the simulator records at 500 Hz)")


#: Cross-parameter checks per notebook, run after each parameter passed its own check.
def _check_generate(p: Mapping[str, Any]) -> None:
    if p["n_keep"] > p["n_generate"]:
        raise ParameterError(f"parameter 'n_keep': got {p['n_keep']}; allowed: at most "
                             f"n_generate = {p['n_generate']}")


def _check_augment(p: Mapping[str, Any]) -> None:
    if p["generator"] == "none" and p["k"] != 0:
        raise ParameterError(f"parameter 'k': got {p['k']} with generator 'none'; allowed: 0 "
                             "(choose generator 'vae_s' or 'vae_c' to add synthetic windows)")


def _check_sweep(p: Mapping[str, Any]) -> None:
    if not p["range_k"]:
        raise ParameterError("parameter 'range_k': got []; allowed: one or more k >= 1 "
                             "(the paper's range is [14, 16, 18])")


CROSS_CHECKS: dict[str, list[Callable[[Mapping[str, Any]], None]]] = {
    "01_data": [_check_01], "02_vae_s": [_check_generate], "03_vae_c": [_check_generate],
    "05_augment": [_check_augment], "06_sweep": [_check_sweep]}


class Params(dict):
    """A validated, read-only parameter mapping with attribute access (``P.seed``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Params are read-only; change the parameters cell instead")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore[assignment]


def defaults(notebook: str) -> dict[str, Any]:
    """The embedded default profile of ``notebook`` (its parameters cell)."""
    _known_notebook(notebook)
    return {name: default_value(notebook, name) for name in NOTEBOOKS[notebook]}


def _known_notebook(notebook: str) -> None:
    if notebook not in NOTEBOOKS:
        raise ParameterError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")


def validate(notebook: str, values: Mapping[str, Any]) -> Params:
    """Check ``values`` for ``notebook`` and return them, completed with defaults.

    Names in ``values`` that belong to other notebooks are ignored (profiles are shared);
    names that no notebook knows raise :class:`ParameterError`.
    """
    _known_notebook(notebook)
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for notebook {notebook}; "
            f"its parameters are: {', '.join(NOTEBOOKS[notebook])}")
    out = {}
    for name in NOTEBOOKS[notebook]:
        value = values.get(name, default_value(notebook, name))
        out[name] = SPECS[name].check(name, value)
    for check in CROSS_CHECKS.get(notebook, []):
        check(out)
    return Params(out)


_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_PLAIN = (int, float, str, bool, list, tuple, dict, type(None))


def resolve(notebook: str, namespace: Mapping[str, Any]) -> Params:
    """Validate the parameters a notebook holds in its namespace (pass ``globals()``).

    Call it at the top of the cell after the parameters cell, before other assignments: any
    other plain-valued global is taken for a parameter, so a misspelt ``-p`` name is caught.
    """
    values = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in _IPYTHON_NAMES and isinstance(v, _PLAIN)}
    return validate(notebook, values)


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML profile (for example ``params/smoke.yaml``) and check its names; the
    sweep grid's ``sweep_*`` keys are left out (they are :mod:`egmlib.workflow.sweep`'s)."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: a profile is a flat mapping of parameter names to values")
    # sweep_k, sweep_seeds, sweep_generators: the grid of the sweep runner (egmlib.workflow.sweep)
    data = {k: v for k, v in data.items() if k in SPECS or not k.startswith("sweep_")}
    unknown = sorted(set(data) - set(SPECS))
    if unknown:
        raise ParameterError(f"{path}: unknown parameter {unknown[0]!r}")
    for name, value in data.items():
        SPECS[name].check(name, value)
    return data
