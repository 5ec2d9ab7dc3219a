"""Measuring what was made: the fidelity study of notebook 04 and the figures.
Imports the layers below it (core, physics, data, generators).

- :mod:`egmlib.core.metrics`  every number the notebooks report
- :mod:`egmlib.evaluation.evaluator` the independent evaluation space (a real-trained rhythm
  classifier and physiological features), the collapse detector, the memorising reference
- :mod:`egmlib.evaluation.fidelity` notebook 04: generated windows against real and reference ones
- :mod:`egmlib.evaluation.plots`    figure helpers with one house style
"""
