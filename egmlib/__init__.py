"""egmlib: synthetic atrial electrograms for electrocardiographic imaging (ECGI).

The thin library behind the notebooks of this repository, which reproduces and extends
"Synthetic Electrogram Generation with Variational Autoencoders for ECGI" (arXiv 2512.14537).

Modules (one concept each):

- :mod:`egmlib.params`       notebook parameters and their validation
- :mod:`egmlib.runs`         run directories, atomic writes, provenance, seeding, progress bars
- :mod:`egmlib.geometry`     triangle meshes, the bi-atrial surface, recording sites
- :mod:`egmlib.simulate`     monodomain Mitchell-Schaeffer on the atrial surface, SR and AF
- :mod:`egmlib.electrograms` unipolar EGMs by the current-source approximation
- :mod:`egmlib.torso`        torso variants and their electrode layouts
- :mod:`egmlib.forward`      BEM torso models, transfer matrices, reference, noise, Tikhonov
- :mod:`egmlib.data`         building, saving, loading, windowing and splitting the data set
- :mod:`egmlib.models`       VAE-S and VAE-C (convolutional VAEs over time x sites windows)
- :mod:`egmlib.train`        losses, training loop, checkpoints, normalisation, seeding
- :mod:`egmlib.generate`     sampling, filtering and selecting synthetic EGMs
- :mod:`egmlib.metrics`      every number the notebooks report
- :mod:`egmlib.pipeline`     running the notebooks in order with papermill, atomically
- :mod:`egmlib.sweep`        parameter sweeps over notebooks, locally or on a Dask cluster
- :mod:`egmlib.plots`        figure helpers with one house style
"""

__version__ = "0.1.0"
