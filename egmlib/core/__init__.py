"""Foundations every other layer uses, with no import of any of them.

- :mod:`egmlib.core.checks`  argument checks with messages that name the parameter
- :mod:`egmlib.core.runs`    run directories, atomic writes, provenance, digests, progress bars
- :mod:`egmlib.core.params`  the notebook parameters: defaults, types, ranges, validation
- :mod:`egmlib.core.metrics` signal, spectral, distribution and class-separation measures
  (numpy/scipy only; the data build, the generators and the evaluation all use them)
"""
