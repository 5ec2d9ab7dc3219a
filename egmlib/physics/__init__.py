"""The physics of the in-silico data: anatomy, electrophysiology, electrograms, torsos, forward
and inverse problems. Imports only :mod:`egmlib.core`.

- :mod:`egmlib.physics.geometry`     triangle meshes, the bi-atrial surface, recording sites
- :mod:`egmlib.physics.surface_io`   reading surfaces from files (VTK legacy and XML, OBJ, PLY, STL,
  openCARP) and cleaning messy ones (fragments, duplicates, degenerate faces, orientation)
- :mod:`egmlib.physics.simulate`     monodomain Mitchell-Schaeffer on the atrial surface, SR and AF
- :mod:`egmlib.physics.electrograms` unipolar EGMs by the current-source approximation
- :mod:`egmlib.physics.torso`        torso variants and their electrode layouts
- :mod:`egmlib.physics.forward`      BEM torso models, transfer matrices, reference, noise, Tikhonov
"""
