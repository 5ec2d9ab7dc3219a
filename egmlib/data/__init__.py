"""The in-silico data set: build, save, load, window and split.

The layer owns the data set of notebook 01: its simulation from the parameters of
:class:`egmlib.core.params.DataConfig` (with the run's seed), its files, and their loading and
checking. It is split into

* :mod:`egmlib.data.store`: constants (:data:`LABELS`, :data:`FORMAT`, ...), :class:`Dataset`,
  :func:`load_dataset`, :func:`save_dataset` (atomic), :func:`windows`,
  :func:`split_by_simulation`;
* :mod:`egmlib.data.build`: the build stages (:func:`make_anatomy`, :func:`make_torso_models`,
  :func:`simulate_all`, :func:`make_windows`, :func:`make_bspms`, :func:`measure`,
  :func:`assign_splits`) and :func:`build_dataset`, which runs them; :data:`DATA_KEYS`;
* :mod:`egmlib.data.analysis`: measurements and post-hoc analyses (:func:`physics_summary`,
  :func:`count_table`, :func:`noisy_bspm`, :func:`tikhonov_evaluation`,
  :func:`inverse_reading`, :func:`sr_activation_map`, :func:`formulation_agreement`);
* :mod:`egmlib.data.export`: the data set as one self-describing NetCDF4 file for other tools
  (:func:`to_xarray`, :func:`export_dataset`, :func:`read_exported`; readable with
  ``xarray.open_dataset`` alone). The ``.npy`` folder stays the working format.

Every name is re-exported here (``from egmlib import data``; ``data.load_dataset(...)``).

Layout of ``<run_dir>/data/`` (written into a temporary folder and renamed when complete):

``manifest.json``
    shapes, dtypes and SHA-256 of every array, label names, the parameters, per-simulation
    parameters and measured summaries, the split, and provenance.
``egm.npy``            (n_windows, T, n_rec) float32, EGM windows at ``fs`` (mV)
``label.npy``          (n_windows,) int8, 0 = SR, 1 = AF
``sim_id.npy``         (n_windows,) int32, the simulation each window comes from
``start_s.npy``        (n_windows,) float32, window start (s after the discarded transient)
``split.npy``          (n_windows,) int8, 0 train, 1 validation, 2 test (by simulation)
``df_hz.npy``          (n_sims, n_rec) float32, dominant frequency per site from the 500 Hz EGM
``egm_500hz_examples.npy``  (n_sims, 4, n_samples) float32, four sites at 500 Hz (figures)
``bspm.npy``           (n_windows, n_torsos, T, 64) float32, noise-free BSPM windows of every
                       torso on its 64-electrode subset, referenced to the mean over those leads
``transfer.npy``       (n_torsos, 64, n_rec) float64, potential-to-potential transfer matrices
                       from the recording sites to the 64 electrodes, with the same reference
``torso_split.npy``    (n_torsos,) int8, 0 train, 2 test (the last ``test_torsos`` torsos)
``bspm_examples.npy``  (2, T, n_vertices of torso 0) float32, the first SR and AF window on the
                       whole torso 0 surface (maps)
``geometry.npz``       vertices, faces, region, links, pacing, site vertices, electrodes
``torsos.npz``         per torso: vertices, faces, 64-electrode subset
``maps.npz``           per simulation: activation time per node (SR: since its stimulus; AF:
                       first activation in the recording), voltage snapshots

BSPMs come from the same membrane-current sources as the EGMs, through the torso-only BEM of
:func:`egmlib.physics.forward.torso_lead_field` (one per torso). To record every torso at every
time step cheaply, the stacked lead fields L (all torso vertices x tissue nodes) are compressed
once by a thin SVD of L, L ~ W R with R of rank r
(:func:`egmlib.physics.forward.compress_lead_field`: the cut lies in the widest gap of the
spectrum between 1e-8 and 1e-7 of the largest singular value, so the spectral-norm error is below
1e-7 of ||L|| and the rank does not move with rounding; the manifest stores ``lead_rank``, the
gap, its margin and the relative error): the simulator records R q (r values per step) and the
BSPM of torso t is W_t R q. The separate Barr-type matrices in ``transfer.npy`` (another
discretisation, :func:`egmlib.physics.forward.transfer_matrix`) map EGMs to BSPMs for the
Tikhonov inverse and for synthetic EGMs; their agreement with the source-based BSPMs is measured
at build time and stored in the manifest.

Arrays are plain ``.npy`` files, so :func:`load_dataset` memory-maps them.
"""


from egmlib.data.analysis import (
    AF_LITERATURE,
    af_regularity,
    af_regularity_summary,
    count_table,
    formulation_agreement,
    inverse_reading,
    noisy_bspm,
    physics_summary,
    sr_activation_map,
    tikhonov_evaluation,
)
from egmlib.data.build import (
    DATA_KEYS,
    Anatomy,
    Measurements,
    Seeds,
    Simulations,
    Splits,
    TorsoModels,
    Windows,
    assign_splits,
    barr_heart,
    build_dataset,
    make_anatomy,
    make_bspms,
    make_torso_models,
    make_windows,
    measure,
    simulate_all,
    spawn_seeds,
)
from egmlib.data.export import (
    dataset_arrays,
    export_dataset,
    exported_manifest,
    read_exported,
    to_xarray,
)
from egmlib.data.sampling import DEFAULT_RATES, sampling_study
from egmlib.data.store import (
    ARRAYS,
    FORMAT,
    LABELS,
    RECORD_FS,
    SPLIT_NAMES,
    DataError,
    Dataset,
    load_dataset,
    save_dataset,
    split_by_simulation,
    windows,
)
from egmlib.physics.forward import compress_lead_field

__all__ = [
    "AF_LITERATURE",
    "ARRAYS",
    "DATA_KEYS",
    "DEFAULT_RATES",
    "FORMAT",
    "LABELS",
    "RECORD_FS",
    "SPLIT_NAMES",
    "Anatomy",
    "DataError",
    "Dataset",
    "Measurements",
    "Seeds",
    "Simulations",
    "Splits",
    "TorsoModels",
    "Windows",
    "af_regularity",
    "af_regularity_summary",
    "assign_splits",
    "barr_heart",
    "build_dataset",
    "compress_lead_field",
    "count_table",
    "dataset_arrays",
    "export_dataset",
    "exported_manifest",
    "formulation_agreement",
    "inverse_reading",
    "load_dataset",
    "make_anatomy",
    "make_bspms",
    "make_torso_models",
    "make_windows",
    "measure",
    "noisy_bspm",
    "physics_summary",
    "read_exported",
    "sampling_study",
    "save_dataset",
    "simulate_all",
    "spawn_seeds",
    "split_by_simulation",
    "sr_activation_map",
    "tikhonov_evaluation",
    "to_xarray",
    "windows",
]
