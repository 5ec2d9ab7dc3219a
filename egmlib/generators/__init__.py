"""The generators: VAE-S and VAE-C, their training, sampling, filtering and selection.
Imports :mod:`egmlib.core` and :mod:`egmlib.data`.

- :mod:`egmlib.generators.models`    convolutional VAEs over time x sites windows, loss by parts
- :mod:`egmlib.generators.train`     normalisation, training loop, checkpoints
- :mod:`egmlib.generators.generate`  sampling, filtering by nearest real window, selection
- :mod:`egmlib.generators.synthesis` what notebooks 02 and 03 run: train, generate, keep, save
"""
