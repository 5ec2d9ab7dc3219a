"""Foundations every other layer uses, with no import of any of them.

- :mod:`egmlib.core.checks`  argument checks with messages that name the parameter
- :mod:`egmlib.core.runs`    run directories, atomic writes, provenance, digests, progress bars
- :mod:`egmlib.core.params`  the notebook parameters: defaults, types, ranges, validation
- :mod:`egmlib.core.process`  process-wide state (seeds, deterministic kernels, threads): set once
  by an entry point (:func:`~egmlib.core.process.setup_process`), scoped inside library calls
- :mod:`egmlib.core.training` the one training loop (early stopping, clipping, divergence,
  best-state restore, checkpoints) of every network in the package
- :mod:`egmlib.core.metrics` signal, spectral, distribution and class-separation measures
  (numpy/scipy only; the data build, the generators and the evaluation all use them)
"""
