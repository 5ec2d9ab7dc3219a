"""Measuring what was made: the fidelity study of notebook 04 and the figures.
Imports the layers below it (core, physics, data, generators).

- :mod:`egmlib.core.metrics`  every number the notebooks report
- :mod:`egmlib.evaluation.fidelity` notebook 04: generated windows against real and reference ones
- :mod:`egmlib.evaluation.plots`    figure helpers with one house style
"""
