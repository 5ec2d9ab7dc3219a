"""egmlib: synthetic atrial electrograms for electrocardiographic imaging (ECGI).

The library behind the notebooks of this repository, which reproduces and extends "Synthetic
Electrogram Generation with Variational Autoencoders for ECGI" (arXiv 2512.14537).

Layers, bottom to top; a module imports only from its own layer or the ones below it
(``tests/test_layout.py`` checks this):

- :mod:`egmlib.core`         checks, files and provenance, parameters, metrics
- :mod:`egmlib.physics`      anatomy, electrophysiology, electrograms, torsos, forward/inverse
- :mod:`egmlib.data`         building, saving, loading, windowing and splitting the data set
- :mod:`egmlib.generators`   VAE-S and VAE-C: models, training, generation, selection
- :mod:`egmlib.evaluation`   the independent evaluation space, the fidelity study, figures
- :mod:`egmlib.augmentation` the reconstruction network and the augmentation experiment
- :mod:`egmlib.workflow`     the notebook pipeline, the choice studies, the sweep and
                             its results

Modules (the public API; each documents its own functions):

- core: :mod:`~egmlib.core.checks` (argument checks), :mod:`~egmlib.core.metrics` (signal and
  distribution measures), :mod:`~egmlib.core.params` (every parameter, one dataclass per stage),
  :mod:`~egmlib.core.process` (seeds, deterministic kernels, threads),
  :mod:`~egmlib.core.runs` (run directories, atomic files, provenance, records),
  :mod:`~egmlib.core.training` (the one training loop)
- physics: :mod:`~egmlib.physics.geometry` (atrial meshes, recording sites and their order),
  :mod:`~egmlib.physics.anatomy` (idealised, CT-derived or user anatomy),
  :mod:`~egmlib.physics.surface_io` (reading surface files), :mod:`~egmlib.physics.remesh`
  (isotropic remeshing), :mod:`~egmlib.physics.simulate` (monodomain Mitchell-Schaeffer),
  :mod:`~egmlib.physics.electrograms` (unipolar electrograms), :mod:`~egmlib.physics.torso`
  (torsos and their electrodes), :mod:`~egmlib.physics.forward` (transfer matrices, Tikhonov)
- data: :mod:`~egmlib.data.build` (the build as stages), :mod:`~egmlib.data.store` (files and
  :class:`~egmlib.data.store.Dataset`), :mod:`~egmlib.data.export` (one NetCDF4 file),
  :mod:`~egmlib.data.analysis` (measurements on the simulations), :mod:`~egmlib.data.sampling`
  (what a sampling rate keeps), :mod:`~egmlib.data.parallel` (Dask scale-out)
- generators: :mod:`~egmlib.generators.models` (VAE-S / VAE-C and their loss),
  :mod:`~egmlib.generators.train` (normaliser, training), :mod:`~egmlib.generators.generate`
  (sampling, scoring, selecting), :mod:`~egmlib.generators.synthesis` (what 02 and 03 run)
- evaluation: :mod:`~egmlib.evaluation.evaluator` (the independent evaluation space, collapse
  detector, memorising reference), :mod:`~egmlib.evaluation.fidelity` (notebook 04),
  :mod:`~egmlib.evaluation.plots` (figures)
- augmentation: :mod:`~egmlib.augmentation.recon` (the BSPM -> EGM network),
  :mod:`~egmlib.augmentation.augment` (one augmentation run, notebook 05),
  :mod:`~egmlib.augmentation.baselines` (Tikhonov and the floor on the same test BSPMs),
  :mod:`~egmlib.augmentation.linear` (a learned linear correction of Tikhonov, no network),
  :mod:`~egmlib.augmentation.residual` (a residual network on that correction)
- workflow: :mod:`~egmlib.workflow.pipeline` (the notebooks in order),
  :mod:`~egmlib.workflow.studies` (the choice studies of the generators and of the
  reconstruction network), :mod:`~egmlib.workflow.sweep` (05 over a grid),
  :mod:`~egmlib.workflow.ablation` (the filter ablation, notebook 07),
  :mod:`~egmlib.workflow.records` (what a run leaves, comparing records),
  :mod:`~egmlib.workflow.results` (collecting records, paired tests),
  :mod:`~egmlib.workflow.quoted` (the README's numbers, each tied to its record),
  :mod:`~egmlib.workflow.site` (the static site of the README and the notebooks)
"""

__version__ = "0.1.0"
