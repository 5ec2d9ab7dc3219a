"""Every parameter of the pipeline: one typed, frozen configuration per stage.

The stage configurations are frozen dataclasses (:class:`RunConfig`, :class:`DataConfig`,
:class:`GeneratorConfig`, :class:`FidelityConfig`, :class:`AugmentConfig`, :class:`SweepConfig`).
Each field carries a :class:`Spec` (default, type, range or allowed values, one line of help);
constructing a stage checks every field and the stage's cross-field rules and raises
:class:`ParameterError` naming the parameter and what is allowed. They are the single source of
defaults, types, ranges, messages and cache keys (:meth:`Stage.key_names`); :data:`SPECS`,
:data:`NOTEBOOKS` and the notebooks' ``parameters`` cells are derived from or checked against them
(``tests/test_params.py`` fails when a cell or a profile drifts).

Why dataclasses and not pydantic: the configurations are flat records of numbers, strings and
lists of ints; the standard library gives frozen instances and field metadata, the checks are a
few lines (:meth:`Spec.check`) with messages in this project's words, and no dependency is added.

Every notebook starts with a single code cell tagged ``parameters`` that assigns plain values
(papermill injects overrides right after it). The next cell calls :func:`resolve`, which

* collects this notebook's parameters from the notebook's namespace,
* checks each one against its :class:`Spec`,
* rejects plain-valued names that no stage knows (a typo in ``-p`` or in a YAML profile),
* builds the notebook's stages, which run their cross-field rules (for example ``n_keep <=
  n_generate``),

and returns a read-only :class:`Params`; ``P.stage(DataConfig)`` gives the typed configuration.

Profiles (``params/smoke.yaml``, ``params/paper.yaml``) are flat YAML files shared by every
notebook and by the sweep: a name that belongs to another notebook is accepted and ignored, so
``papermill NB OUT -f params/smoke.yaml`` works for each notebook. The default profile is the
stages' defaults (the notebooks' parameters cells).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ANATOMY_NAMES",
    "GENERATORS",
    "LATENT_LAYOUTS",
    "NOTEBOOKS",
    "NOTEBOOK_DEFAULTS",
    "NOTEBOOK_STAGES",
    "PROFILES",
    "SPECS",
    "STAGES",
    "UPSAMPLINGS",
    "AugmentConfig",
    "DataConfig",
    "FidelityConfig",
    "GeneratorConfig",
    "ParameterError",
    "Params",
    "RunConfig",
    "Spec",
    "Stage",
    "SweepConfig",
    "anatomy_paths",
    "anatomy_problem",
    "default_value",
    "defaults",
    "load_profile",
    "param",
    "resolve",
    "validate",
]


S = TypeVar("S", bound="Stage")


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
        item: for ``kind=list``, the type of each item (``choices`` then apply to each item).
        help: one line shown in error messages and in ``papermill --help-notebook``.
        nonempty: for ``kind=list``, an empty list is refused.
    """

    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    help: str = ""
    nonempty: bool = False

    def __post_init__(self) -> None:
        if "=" in self.help:  # papermill --help-notebook skips a line with a second "="
            raise ValueError(f"help text may not contain '=': {self.help!r}")

    def as_field(self) -> Any:
        """A dataclass field with this spec, for a stage that shares a parameter of another."""
        if self.kind is list:
            return field(default_factory=lambda: list(self.default),
                         metadata={"spec": self, "key": True})
        return field(default=self.default, metadata={"spec": self, "key": True})

    def allowed(self) -> str:
        """A human description of the allowed values."""
        if self.choices is not None:
            one_of = "one of " + ", ".join(repr(c) for c in self.choices)
            return f"a non-empty list of items each {one_of}" if self.kind is list else one_of
        what = self.kind.__name__ if self.kind is not list else f"list of {self.item.__name__}"
        if self.nonempty:
            what = f"non-empty {what}"
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
            if not isinstance(value, (list, tuple)) or (self.nonempty and not value):
                raise ParameterError(
                    f"parameter {name!r}: got {value!r}; allowed: {self.allowed()}")
            each = Spec(None, self.item, self.low, self.high, self.choices)
            return [each.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
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


PROFILES = ("smoke", "default", "paper", "ct_biatrial")
GENERATORS = ("vae_s", "vae_c")
#: Column orders of the recording sites (:func:`egmlib.physics.geometry.order_sites`; kept here
#: so that parameters are checked without importing the physics layer).
SITE_ORDERS = ("chain", "spectral", "fps")
#: The generators' latent layouts and decoder upsamplings
#: (:data:`egmlib.generators.models.LATENT_LAYOUTS`, :data:`~egmlib.generators.models.UPSAMPLINGS`;
#: kept here so that parameters are checked without importing torch).
LATENT_LAYOUTS = ("vector", "sequence")
UPSAMPLINGS = ("transposed", "resize")
#: The built-in anatomies (egmlib.physics.anatomy); anything else names surface files.
ANATOMY_NAMES = ("idealised", "ct_biatrial")


def anatomy_paths(anatomy: str) -> list[Path]:
    """The surface files an ``anatomy`` value that is not a built-in name stands for (one, or two
    joined by a comma)."""
    return [Path(x.strip()).expanduser() for x in anatomy.split(",")]


def anatomy_problem(anatomy: str) -> str | None:
    """None when ``anatomy`` is a built-in name or one or two existing files; else what is wrong
    (the one check of :class:`DataConfig` and :func:`egmlib.physics.anatomy.load_anatomy`)."""
    if anatomy in ANATOMY_NAMES:
        return None
    paths = anatomy_paths(anatomy)
    if len(paths) > 2 or not all(str(x) for x in paths):
        return "give one surface file or two joined by a comma"
    missing = [str(x) for x in paths if not x.is_file()]
    return f"no such file: {', '.join(missing)}" if missing else None


def param(default: Any, kind: type, low: float | None = None, high: float | None = None, *,
          choices: tuple[Any, ...] | None = None, item: type | None = None,
          nonempty: bool = False, key: bool = True, help: str = "") -> Any:
    """A field of a stage configuration: its default and its :class:`Spec` (in the metadata).

    ``key=False`` leaves the field out of the stage's :meth:`Stage.key_names` (a switch such as
    ``rebuild`` that changes how, not what, is made).
    """
    spec = Spec(list(default) if kind is list else default, kind, low, high, choices, item,
                help, nonempty)
    if kind is list:
        return field(default_factory=lambda: list(default), metadata={"spec": spec, "key": key})
    return field(default=default, metadata={"spec": spec, "key": key})


@dataclass(frozen=True)
class Stage:
    """Base of the stage configurations: frozen, validated on construction.

    Each field carries its :class:`Spec` (default, type, range, help); construction checks every
    field and then the stage's cross-field rules (:meth:`check`), raising
    :class:`ParameterError` that names the parameter and what is allowed. Ints given for float
    fields are promoted.
    """

    def __post_init__(self) -> None:
        for f in fields(self):
            value = f.metadata["spec"].check(f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field rules; the base has none."""

    @classmethod
    def specs(cls) -> dict[str, Spec]:
        """``name -> Spec`` of this stage's fields, in declaration order."""
        return {f.name: f.metadata["spec"] for f in fields(cls)}

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Stage:
        """This stage from a flat mapping (a notebook's parameters, a profile): its own names are
        taken, the others ignored, missing ones get their defaults."""
        names = cls.specs()
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def key_names(cls) -> tuple[str, ...]:
        """The fields that determine what the stage makes (its cache key)."""
        return tuple(f.name for f in fields(cls) if f.metadata["key"])


@dataclass(frozen=True)
class RunConfig(Stage):
    """Bookkeeping every notebook shares: the profile, where it writes, the master seed."""

    profile: str = param("default", str, choices=PROFILES,
                         help="label of the parameter set; 'default' writes figures to figures/")
    run_dir: str = param("", str, help="run directory; '' means runs/<profile>")
    seed: int = param(0, int, 0, 2**31 - 1, help="master seed of the notebook")


@dataclass(frozen=True)
class DataConfig(Stage):
    """The in-silico data set of notebook 01: anatomy, simulation, signals, windows, splits.

    Its :meth:`key_names` (with the run's seed) are the parameters a data set on disk must match
    to be reused (:data:`egmlib.data.build.DATA_KEYS`).
    """

    # what to do with a data set already on disk
    rebuild: bool = param(False, bool, key=False,
                          help="rebuild artifacts even if identical ones exist")
    # anatomy and recording sites
    anatomy: str = param("idealised", str, nonempty=True,
                         help="idealised | ct_biatrial | a surface file | 'la_file,ra_file'")
    mesh_edge_mm: float = param(2.0, float, 1.0, 8.0,
                                help="target mean edge of the atrial mesh (mm)")
    n_rec: int = param(256, int, 16, 4096, help="recording sites (paper: 2048)")
    site_order: str = param("chain", str, choices=SITE_ORDERS,
                            help="column order of the sites: a short path per atrium (chain), "
                                 "a spectral 1-D embedding, or the sampling order (fps)")
    electrode_offset_mm: float = param(
        1.5, float, 0.5, 5.0, help="electrode height above the tissue along the normal (mm)")
    # simulations (their priors: egmlib.physics.simulate.PRIORS)
    n_sr: int = param(48, int, 1, 10_000, help="sinus-rhythm simulations")
    n_af: int = param(48, int, 1, 10_000, help="atrial-fibrillation simulations")
    dt_ms: float = param(0.1, float, 0.01, 0.2, help="time step of the explicit solver (ms)")
    transient_s: float = param(1.0, float, 0.0, 10.0,
                               help="initial simulated time discarded (s)")
    record_s: float = param(6.0, float, 0.5, 600.0, help="simulated time kept per simulation (s)")
    batch: int = param(24, int, 1, 256,
                       help="simulations advanced together as columns of one state")
    # windows for the networks
    fs: float = param(100.0, float, 10.0, 500.0,
                      help="sampling rate of the network windows (Hz)")
    T: int = param(400, int, 16, 4000, help="window length in samples at fs (paper: 400)")
    hop_s: float = param(0.5, float, 0.05, 60.0, help="hop between consecutive windows (s)")
    # torsos and body-surface potentials
    n_torsos: int = param(5, int, 1, 50,
                          help="torso variants (the paper used ten transfer matrices)")
    test_torsos: int = param(2, int, 0, 49,
                             help="torsos held out for testing (the last ones)")
    torso_edge_mm: float = param(27.5, float, 10.0, 60.0, help="mean edge of the torso mesh (mm)")
    snr_db: float = param(20.0, float, -10.0, 80.0, key=False,  # noise is added when used
                          help="SNR of the white noise added to BSPMs (dB)")
    # splits by simulation
    test_fraction: float = param(0.2, float, 0.0, 0.9,
                                 help="fraction of simulations held out for test")
    val_fraction: float = param(0.15, float, 0.0, 0.9,
                                help="fraction of simulations held out for validation")

    def check(self) -> None:
        problem = anatomy_problem(self.anatomy)
        if problem is not None:
            raise ParameterError(f"parameter 'anatomy': got {self.anatomy!r}; allowed: "
                                 f"{' | '.join(ANATOMY_NAMES)}, a surface file or two joined "
                                 f"by a comma (left atrium first); {problem}")
        window_s = self.T / self.fs
        if window_s > self.record_s + 1e-9:
            raise ParameterError(
                f"parameters 'T' and 'fs': a window of T/fs = {window_s:g} s does not fit in "
                f"record_s = {self.record_s:g} s; allowed: T <= fs * record_s")
        if self.test_fraction + self.val_fraction >= 0.9:
            raise ParameterError(
                "parameters 'test_fraction' + 'val_fraction' must stay below 0.9")
        if self.test_torsos >= self.n_torsos:
            raise ParameterError(
                f"parameter 'test_torsos': got {self.test_torsos}; allowed: fewer than "
                f"n_torsos = {self.n_torsos} (training needs a torso)")
        rest = 500.0 % self.fs
        if rest > 1e-9 and abs(rest - self.fs) > 1e-9:
            raise ParameterError(f"parameter 'fs': got {self.fs!r}; allowed: a divisor of 500 Hz "
                                 "(the simulator records at 500 Hz)")


@dataclass(frozen=True)
class GeneratorConfig(Stage):
    """Training, sampling and filtering of one generator (notebooks 02 and 03).

    Deviations from the paper at the default profile, to fit minutes of CPU training: latent 64
    (paper 250), Adam at lr 2e-3 with batch 4, learning rate x0.98 per epoch, 110 epochs for
    VAE-S in mixed bfloat16 precision where the processor has it (``precision="auto"``,
    :func:`egmlib.generators.train.resolve_precision`) and 40 for VAE-C in float32
    (:data:`NOTEBOOK_DEFAULTS`). The optimiser
    settings were chosen on the *validation* split by the choice study
    (``python -m egmlib.workflow.studies``, record ``results/default/generator_choices.json``,
    which lists each setting compared, at equal budget, with its validation correlation): a few
    thousand optimiser steps is all such a budget allows, and more, smaller steps won. VAE-S's
    110 epochs and the precision by the budget study (``--study budget``, record
    ``results/default/generator_budget.json``): of the rows that fit 5 minutes on 2 cores, the
    best validation correlation (0.647, against 0.602 for 60 epochs in float32 in about the same
    time). VAE-C's latent code is a sequence in time, 3 values per step of 16 samples, decoded
    by resize-convolutions (``latent_layout="sequence"``, ``upsample="resize"``;
    :class:`egmlib.generators.models.VAEConfig`), chosen on the validation split by the AF latent
    study (``--study af_latent``, record ``results/default/generator_af_latent.json``, rule
    fixed before it ran): its generated AF no longer repeats at the data set's window hop. The
    paper profile restores latent 250 and the authors' layout (one vector, transposed
    convolutions) for both generators.
    """

    latent: int = param(64, int, 2, 1024,
                        help="latent dimension (paper: 250); latent_layout 'sequence': values "
                             "per time step")
    latent_layout: str = param("vector", str, choices=LATENT_LAYOUTS,
                               help="the latent code: one vector per window (the paper) or a "
                                    "sequence in time (chosen for VAE-C on validation by the AF "
                                    "latent study)")
    upsample: str = param("transposed", str, choices=UPSAMPLINGS,
                          help="the decoder's upsampling: transposed convolutions (the paper) "
                               "or resize-convolutions")
    epochs: int = param(110, int, 1, 10_000, help="maximum training epochs")
    batch_size: int = param(4, int, 1, 1024, help="training batch size")
    lr: float = param(2e-3, float, 1e-6, 1.0, help="Adam learning rate")
    lr_decay: float = param(0.98, float, 0.5, 1.0,
                            help="learning-rate factor per epoch (ExponentialLR; 1 keeps it)")
    beta_max: float = param(1e-3, float, 0.0, 10.0,
                            help="final KL weight after the linear warm-up")
    spec_avg: float = param(0.0, float, 0.0, 10.0,
                            help="weight of the time-averaged log-spectrum loss term (not in the "
                                 "paper; 0: the paper's loss)")
    warmup_epochs: int = param(5, int, 0, 10_000, help="epochs of linear beta warm-up")
    patience: int = param(10, int, 1, 10_000,
                          help="early stopping: epochs without validation gain")
    n_generate: int = param(200, int, 1, 100_000, help="windows generated (paper: 200)")
    n_keep: int = param(25, int, 1, 100_000, help="windows kept after filtering (paper: 25)")
    gen_mode: str = param("guided", str, choices=("prior", "guided"),
                          help="z from the prior (the paper), or from a Gaussian fitted to "
                               "training encodings (chosen on validation by the gen_mode study)")
    device: str = param("cpu", str, choices=("cpu", "cuda"), help="torch device for training")
    precision: str = param("auto", str, choices=("auto", "float32", "bfloat16"),
                           help="arithmetic of the training step ('auto': bfloat16 where the "
                                "hardware has it, else float32)")

    def check(self) -> None:
        if self.n_keep > self.n_generate:
            raise ParameterError(f"parameter 'n_keep': got {self.n_keep}; allowed: at most "
                                 f"n_generate = {self.n_generate}")


@dataclass(frozen=True)
class FidelityConfig(Stage):
    """The fidelity study of notebook 04."""

    n_eval: int = param(100, int, 2, 100_000,
                        help="generated windows per generator and rhythm for the fidelity "
                             "metrics")
    gen_mode: str = GeneratorConfig.specs()["gen_mode"].as_field()


@dataclass(frozen=True)
class AugmentConfig(Stage):
    """One augmentation run of notebook 05: k synthetic windows, the reconstruction network.

    The network's learning rate (1e-3), its loss weights (:class:`egmlib.augmentation.recon.
    ReconConfig`) and its stopping rule (at most 40 epochs, patience 8, no minimum) were chosen
    on the validation simulations by the reconstruction network's choice study
    (:func:`egmlib.workflow.studies.recon_choice_study`, record
    ``results/default/recon_choices.json``): every rule was replayed on the same 40-epoch
    validation curves, and the shortest one within 0.01 of the longest's correlation on both
    seeds was kept. The rule used before (30 epochs, patience 5) stopped a run of the old loss at
    epoch 8 with validation correlation 0.01 there. The network trains in mixed precision where
    the processor has bfloat16 arithmetic (``recon_precision="auto"``): in the reconstruction
    precision study (``--study recon_precision``, record ``results/default/recon_precision.json``,
    the same seeds and 40 epochs) its validation correlation under every stopping rule was within
    0.01 of float32's (the rule fixed before the study), in 114 s against 129 s for both seeds.
    """

    k: int = param(18, int, 0, 100_000, help="synthetic EGM windows added to the training set")
    generator: str = param("vae_s", str, choices=("none", *GENERATORS),
                           help="where the synthetic windows come from ('none': k must be 0)")
    out_dir: str = param("", str, help="folder of this run's result.json; '' means "
                                       "<run_dir>/05_augment/<generator>_k<k>_s<seed>")
    snr_db: float = DataConfig.specs()["snr_db"].as_field()
    recon_epochs: int = param(40, int, 1, 10_000,
                              help="maximum epochs of the reconstruction network")
    recon_patience: int = param(8, int, 1, 10_000,
                                help="early stopping patience (reconstruction)")
    recon_min_epochs: int = param(0, int, 0, 10_000,
                                  help="no early stop before this many epochs (reconstruction)")
    recon_lr: float = param(1e-3, float, 1e-6, 1.0,
                            help="Adam learning rate of the reconstruction network")
    recon_precision: str = param("auto", str, choices=("auto", "float32", "bfloat16"),
                                 help="arithmetic of the reconstruction network's training "
                                      "step ('auto': bfloat16 where the hardware has it)")
    recon_schedule: str = param("constant", str, choices=("constant", "cosine"),
                                help="learning-rate schedule of the reconstruction network "
                                     "('cosine': annealed to 0 at recon_epochs)")
    n_real_sims: int = param(0, int, 0, 10_000,
                             help="real training simulations per rhythm the network sees (0: "
                                  "all; nested random subsets drawn from the seed)")
    filter_pool: int = param(0, int, 0, 100_000,
                             help="generated windows per rhythm the filter chooses the k best "
                                  "from (0: all generated; k: no filter)")
    device: str = GeneratorConfig.specs()["device"].as_field()

    def check(self) -> None:
        if self.generator == "none" and self.k != 0:
            raise ParameterError(
                f"parameter 'k': got {self.k} with generator 'none'; allowed: 0 (choose "
                "generator 'vae_s' or 'vae_c' to add synthetic windows)")


@dataclass(frozen=True)
class SweepConfig(Stage):
    """The augmentation study: notebook 05 over k x seed x generator x real simulations x filter
    pool (``make sweep``), aggregated by notebook 06.

    The primary hypothesis is written here, before the sweep runs: the generator
    ``hypothesis_generator``'s windows at the k of ``range_k`` (averaged per seed) change the
    test correlation of ``hypothesis_rhythm`` against the same seed's ``k = 0`` run, in the
    scarcest arm of ``sweep_n_real_sims`` whose ``k = 0`` runs reach a mean *validation*
    correlation of ``learn_threshold`` (a network that does not learn at all cannot be
    helped or hurt measurably). Decision rule and statistics:
    :func:`egmlib.workflow.results.primary_test`; every other comparison is secondary, with
    Holm's correction (:func:`egmlib.workflow.results.scarcity_table`).
    """

    sweep_k: list = param([0, 6, 12, 18], list, 0, 100_000, item=int, nonempty=True,
                          help="k values of the sweep grid")
    sweep_seeds: list = param(list(range(20)), list, 0, 2**31 - 1, item=int, nonempty=True,
                              help="seeds of the sweep grid")
    sweep_generators: list = param(list(GENERATORS), list, item=str, choices=GENERATORS,
                                   nonempty=True, help="generators of the sweep grid")
    sweep_n_real_sims: list = param([2, 4, 8, 16, 0], list, 0, 10_000, item=int, nonempty=True,
                                    help="real training simulations per rhythm of the grid "
                                         "(0: all)")
    sweep_filter_pool: list = param([0], list, 0, 100_000, item=int, nonempty=True,
                                    help="filter pools of the grid (0: the paper's filter; k: "
                                         "none)")
    sweep_dir: str = param("", str, help="folder of the sweep's runs; '' means <run_dir>/sweep")
    range_k: list = param([18], list, 1, 100_000, item=int, nonempty=True,
                          help="k of the primary hypothesis, tested together against k 0 "
                               "(paper: gains at k 14-18)")
    hypothesis_generator: str = param("vae_s", str, choices=GENERATORS,
                                      help="generator of the primary hypothesis")
    hypothesis_rhythm: str = param("SR", str, choices=("SR", "AF"),
                                   help="rhythm of the primary hypothesis (paper: SR)")
    learn_threshold: float = param(0.2, float, -1.0, 1.0,
                                   help="mean validation correlation that the k 0 runs of the "
                                        "primary arm must reach")
    # The filter ablation (the paper's open question 4; :mod:`egmlib.workflow.ablation`), fixed
    # before it ran: the generator of the primary hypothesis, k = 18 (the primary's), in the arm
    # of 8 real simulations per rhythm, where the sweep measured the largest gain (a choice that
    # read the sweep's test split: the ablation is exploratory). Each k runs with every pool and
    # without a filter (pool = k); pool 0 is the paper's filter (best k of all generated).
    # k = 6 was added while the k = 18 runs were under way, before any of their numbers was
    # aggregated, to cross the filter with k as the issue asks.
    ablation_generator: str = param("vae_s", str, choices=GENERATORS,
                                    help="generator of the filter ablation")
    ablation_n_real_sims: int = param(8, int, 0, 10_000,
                                      help="real training simulations per rhythm of the filter "
                                           "ablation (0: all)")
    ablation_k: list = param([6, 18], list, 1, 100_000, item=int, nonempty=True,
                             help="k of the filter ablation")
    ablation_filter_pools: list = param([0, 72], list, 0, 100_000, item=int, nonempty=True,
                                        help="filter pools of the ablation (0: the paper's "
                                             "filter; the unfiltered pool k is always added)")

    def check(self) -> None:
        small = [p for p in self.ablation_filter_pools if 0 < p < max(self.ablation_k)]
        if small:
            raise ParameterError(
                f"parameter 'ablation_filter_pools': got {small}; allowed: 0 or at least the "
                f"largest ablation_k ({max(self.ablation_k)}), so the filter has k windows "
                "to keep")


#: Every stage configuration, bottom to top of the pipeline.
STAGES: tuple[type[Stage], ...] = (RunConfig, DataConfig, GeneratorConfig, FidelityConfig,
                                   AugmentConfig, SweepConfig)


def _all_specs() -> dict[str, Spec]:
    """Every parameter of every stage; a name shared by two stages must have one Spec."""
    out: dict[str, Spec] = {}
    for stage in STAGES:
        for name, spec in stage.specs().items():
            if name in out and out[name] != spec:
                raise RuntimeError(f"parameter {name!r} is declared twice with other specs")
            out[name] = spec
    return out


#: Every parameter any notebook or profile takes, derived from :data:`STAGES`.
SPECS: dict[str, Spec] = _all_specs()

#: The stages whose rules apply to each notebook, and the parameters it takes, in the order of its
#: parameters cell. (06 takes no seed: it aggregates runs of every seed.)
NOTEBOOK_STAGES: dict[str, tuple[type[Stage], ...]] = {
    "01_data": (RunConfig, DataConfig),
    "02_vae_s": (RunConfig, GeneratorConfig),
    "03_vae_c": (RunConfig, GeneratorConfig),
    "04_fidelity": (RunConfig, FidelityConfig),
    "05_augment": (RunConfig, AugmentConfig),
    "06_sweep": (RunConfig, SweepConfig),
    "07_filter": (RunConfig, SweepConfig),
}
NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "01_data": ("profile", "run_dir", "seed", *DataConfig.specs()),
    "02_vae_s": ("profile", "run_dir", "seed", *GeneratorConfig.specs()),
    "03_vae_c": ("profile", "run_dir", "seed", *GeneratorConfig.specs()),
    "04_fidelity": ("profile", "run_dir", "seed", *FidelityConfig.specs()),
    "05_augment": ("profile", "run_dir", "seed", *AugmentConfig.specs()),
    "06_sweep": ("profile", "run_dir", "sweep_dir", "range_k", "hypothesis_generator",
                 "hypothesis_rhythm", "learn_threshold"),
    "07_filter": ("profile", "run_dir", "ablation_generator", "ablation_n_real_sims",
                  "ablation_k", "ablation_filter_pools"),
}


#: Defaults that differ from the schema's for one notebook. VAE-C trains on SR and AF windows,
#: twice VAE-S's, for 40 epochs, in float32: in mixed precision its AF lost most of what it
#: learns (the precision study, ``--study precision``, record
#: ``results/default/generator_precision.json``, validation split: AF correlation 0.031 against
#: 0.098 in float32, 76% of the AF reconstructions' variance common to all of them against 50%,
#: SR 0.466 against 0.477), though it took 260 s against 437 s. VAE-C adds the time-averaged
#: log-spectrum term (``spec_avg``, not in the paper;
#: :func:`egmlib.generators.models.vae_loss`): with the paper's loss alone its generated AF
#: windows came out with an SR-like dominant frequency. Its weight, like every other training
#: setting, is chosen on the validation split by the choice study
#: (:mod:`egmlib.workflow.studies`, record ``results/default/generator_choices.json``, 8 epochs):
#: against the paper's loss (0), 0.15 lowers the validation LSD (AF 1.23 against 2.08, SR 1.38
#: against 1.56) at about the same correlation (SR 0.29 against 0.31); 0.5 halves SR's
#: correlation (0.15). No weight moved the generated AF windows' dominant frequency.
NOTEBOOK_DEFAULTS: dict[str, dict[str, Any]] = {
    "03_vae_c": {"latent": 3, "latent_layout": "sequence", "upsample": "resize", "epochs": 40,
                 "spec_avg": 0.15, "precision": "float32"}}


def default_value(notebook: str, name: str) -> Any:
    """The default of parameter ``name`` in ``notebook`` (:data:`NOTEBOOK_DEFAULTS` first)."""
    return NOTEBOOK_DEFAULTS.get(notebook, {}).get(name, SPECS[name].default)


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

    def stage(self, cls: type[S]) -> S:
        """The typed, frozen configuration of one stage from these values (missing names get
        their defaults), e.g. ``P.stage(DataConfig).n_rec``."""
        return cls.from_values(self)  # type: ignore[return-value]


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
    for stage in NOTEBOOK_STAGES[notebook]:
        stage.from_values(out)  # the stage's own cross-field rules
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
    """Read a flat YAML profile (for example ``params/smoke.yaml``) and check it: every name must
    be a parameter of some stage, every value must pass its :class:`Spec`, and the stages built
    from the profile must pass their cross-field rules. The same file works with papermill
    (``papermill NB OUT -f params/smoke.yaml``) for every notebook: names of other notebooks are
    accepted and ignored there."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: a profile is a flat mapping of parameter names to values")
    unknown = sorted(set(data) - set(SPECS))
    if unknown:
        raise ParameterError(f"{path}: unknown parameter {unknown[0]!r}")
    for name, value in data.items():
        SPECS[name].check(name, value)
    for stage in STAGES:
        try:
            stage.from_values(data)
        except ParameterError as exc:
            raise ParameterError(f"{path}: {exc}") from exc
    return data
