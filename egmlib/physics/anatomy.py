"""The anatomies the data build knows: the idealised bi-atrial surface, a real CT-derived one
shipped with the repository, or a user's surface file(s).

``anatomy`` names (:func:`load_anatomy`):

* ``"idealised"`` -- :func:`egmlib.physics.geometry.biatrial_geometry`.
* ``"ct_biatrial"`` -- the left and right atria of case 1 of Strocchi et al., "A publicly
  available virtual cohort of four-chamber heart meshes for cardiac electro-mechanics
  simulations", PLoS ONE 15(6): e0235145 (2020), DOI 10.1371/journal.pone.0235145 (data: Zenodo
  record 4506930; licence CC BY 4.0), one heart-failure patient's CT. The atrial surfaces were
  separated from the four-chamber mesh by the pcmlab/atrialmtk project. Shipped in
  ``egmlib/physics/anatomy_data/`` with its attribution (``README.md`` there), remeshed
  (:func:`egmlib.physics.remesh.remesh`) to :data:`CT_EDGE_MM` and translated so that the mean of
  the two atria's centroids is the origin; the frame is the CT's (LPS: x left, y posterior, z
  superior), the one :mod:`egmlib.physics.torso` places the torso in. Other edge lengths are
  remeshed from the shipped copy. Links and sinus node:
  :meth:`~egmlib.physics.geometry.AtrialGeometry.from_atria`.
* a path to one surface file (one region, :meth:`AtrialGeometry.from_arrays`) or two joined by a
  comma, ``"la.vtk,ra.vtk"`` (left atrium first; :meth:`AtrialGeometry.from_atria`), in any format
  :func:`egmlib.physics.surface_io.read_surface` reads; cleaned, remeshed to the requested edge
  and recentred like the CT anatomy. Their frame must be LPS in millimetres.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from egmlib.core.params import ANATOMY_NAMES, anatomy_paths, anatomy_problem
from egmlib.physics.geometry import AtrialGeometry, TriMesh, biatrial_geometry
from egmlib.physics.remesh import remesh

__all__ = ["ANATOMY_NAMES", "CT_EDGE_MM", "CT_FILE", "anatomy_digest", "ct_atria",
           "load_anatomy"]

#: Folder of the shipped anatomy and its attribution.
ANATOMY_DIR = Path(__file__).with_name("anatomy_data")
CT_FILE = ANATOMY_DIR / "ct_biatrial_case01.npz"
#: Target edge (mm) of the shipped CT copy (the idealised surface's default edge).
CT_EDGE_MM = 2.0


def anatomy_digest(anatomy: str) -> str:
    """A digest of what ``anatomy`` names: the name for a built-in one, the files' bytes for a
    path (so that a data set is rebuilt when a user's surface changes)."""
    if anatomy == "idealised":
        return "idealised"
    h = hashlib.sha256()
    for p in ([CT_FILE] if anatomy == "ct_biatrial" else anatomy_paths(anatomy)):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def ct_atria() -> tuple[TriMesh, TriMesh]:
    """The shipped CT left and right atrial surfaces (remeshed at :data:`CT_EDGE_MM`)."""
    z = np.load(CT_FILE)
    return (TriMesh(z["la_vertices"], z["la_faces"]), TriMesh(z["ra_vertices"], z["ra_faces"]))


def _recentre(parts: list[TriMesh]) -> list[TriMesh]:
    centre = np.mean([p.vertices.mean(axis=0) for p in parts], axis=0)
    return [TriMesh(p.vertices - centre, p.faces) for p in parts]


def load_anatomy(anatomy: str, edge_mm: float) -> AtrialGeometry:
    """The simulation geometry of ``anatomy`` (see the module docstring) at mean edge
    ``edge_mm``."""
    problem = anatomy_problem(anatomy)
    if problem is not None:
        raise ValueError(f"anatomy: got {anatomy!r}; allowed: {', '.join(ANATOMY_NAMES)} or a "
                         f"path ({problem})")
    if anatomy == "idealised":
        return biatrial_geometry(edge_mm)
    if anatomy == "ct_biatrial":
        la, ra = ct_atria()
        if abs(edge_mm - CT_EDGE_MM) > 1e-9:
            la, ra = remesh(la, edge_mm), remesh(ra, edge_mm)
        la, ra = _recentre([la, ra])
        return AtrialGeometry.from_atria(la, ra)
    from egmlib.physics.surface_io import read_surface

    meshes = _recentre([remesh(read_surface(p), edge_mm) for p in anatomy_paths(anatomy)])
    if len(meshes) == 1:
        return AtrialGeometry.from_arrays(meshes[0].vertices, meshes[0].faces)
    return AtrialGeometry.from_atria(meshes[0], meshes[1])
