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
- :mod:`egmlib.workflow`     the notebook pipeline, the generators' choice study, the sweep and
                             its results
"""

__version__ = "0.1.0"
