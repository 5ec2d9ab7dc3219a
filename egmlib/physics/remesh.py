"""Simulation-quality surfaces: isotropic remeshing of a (possibly open) atrial surface.

Why: the explicit solver's largest stable step is 2 / (D lambda_max(M^-1 K)), and a single small or
obtuse triangle sets lambda_max for the whole mesh. A segmented clinical or CT surface carries
such triangles (a clinical left atrium tried for this repository had 0.03 mm edges and 177-degree
slivers: stable step 0.0003 ms), so it is remeshed before it is simulated.

How (:func:`remesh`), with MeshLab's filters through ``pymeshlab`` (Cignoni et al., "MeshLab: an
Open-Source Mesh Processing Tool", Eurographics Italian Chapter Conference 2008):

1. the holes of an open surface (veins, valves) are closed (``meshing_close_holes``), because the
   isotropic remesher keeps boundary vertices where they are: on an open CT atrium (0.8 mm rim
   edges) a direct remesh to 2 mm left 0.03 mm^2 rim vertices and a stable step of 0.03-0.06 ms,
   a tenth of the idealised surface's;
2. the closed surface is remeshed to the target edge (``meshing_isotropic_explicit_remeshing``:
   split long edges, collapse short ones, flip to equalise valence, tangential smoothing and
   reprojection onto the input surface; Botsch & Kobbelt, "A remeshing approach to
   multiresolution modeling", Symposium on Geometry Processing 2004). Feature edges are not kept
   (atria are smooth) and the surface-distance check is off: with it on, collapses near the
   pulmonary veins were refused and left 10-degree triangles;
3. the caps are cut away again: a face is kept when its three vertices lie within
   ``cap_tol * edge_mm`` of the input surface (``compute_scalar_by_distance_from_another_mesh``);
   the new rims follow the old ones to within about one edge;
4. the result is cleaned (:func:`~egmlib.physics.surface_io.clean_surface`: largest part,
   consistent orientation) and oriented outwards (positive volume of the capped surface).

Measured on the CT bi-atrial anatomy shipped with the repository (``anatomy: ct_biatrial``), at a
2 mm target: the stable step at D = 1 mm^2/ms is 0.72 ms (LA) and 0.81 ms (RA) against 0.58 ms for
the idealised surface at the same edge; minimum angle 24 degrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from egmlib.physics.geometry import MeshError, TriMesh

__all__ = ["mesh_quality", "remesh", "wrap_surface"]

#: Passes of the isotropic remesher (MeshLab's default is 10; 15 settled the CT atria's valence).
REMESH_ITERATIONS = 15
#: A remeshed face is kept when its vertices lie within this many target edges of the input.
CAP_TOLERANCE = 0.25


def _angles_deg(mesh: TriMesh) -> NDArray[np.float64]:
    """(m, 3) interior angles of every face in degrees."""
    p = mesh.vertices[mesh.faces]
    out = np.empty((mesh.n_faces, 3))
    for k in range(3):
        u = p[:, (k + 1) % 3] - p[:, k]
        w = p[:, (k + 2) % 3] - p[:, k]
        cos = np.einsum("ij,ij->i", u, w) / (np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1))
        out[:, k] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def mesh_quality(mesh: TriMesh) -> dict[str, float]:
    """Edge lengths (mm), angles (degrees) and the smallest lumped vertex area (mm^2) of a mesh:
    what sets the explicit solver's stable step."""
    e = mesh.edge_lengths()
    ang = _angles_deg(mesh)
    return {"n_vertices": float(mesh.n_vertices), "edge_mean_mm": float(e.mean()),
            "edge_min_mm": float(e.min()), "edge_max_mm": float(e.max()),
            "angle_min_deg": float(ang.min()), "angle_max_deg": float(ang.max()),
            "vertex_area_min_mm2": float(mesh.vertex_areas().min())}


def _pymeshlab() -> Any:
    try:
        import pymeshlab
    except ImportError as exc:  # pragma: no cover - pymeshlab is a pinned dependency
        raise ImportError("remesh needs pymeshlab (pip install pymeshlab)") from exc
    return pymeshlab


def remesh(mesh: TriMesh, edge_mm: float, *, iterations: int = REMESH_ITERATIONS,
           cap_tol: float = CAP_TOLERANCE) -> TriMesh:
    """An isotropic, simulation-quality copy of ``mesh`` with mean edge about ``edge_mm``.

    Open surfaces stay open (their holes are closed, remeshed and cut away again, see the module
    docstring); the result is one connected surface, oriented outwards.

    Raises:
        ValueError: ``edge_mm`` or ``iterations`` out of range.
        MeshError: nothing of the surface survives (``edge_mm`` far larger than the surface).
    """
    if not 0.1 <= edge_mm <= 50.0:
        raise ValueError(f"edge_mm must lie in [0.1, 50] mm; got {edge_mm}")
    if not 1 <= iterations <= 200:
        raise ValueError(f"iterations must lie in [1, 200]; got {iterations}")
    from egmlib.physics.surface_io import clean_surface

    ml = _pymeshlab()
    ms = ml.MeshSet()
    ms.add_mesh(ml.Mesh(mesh.vertices, mesh.faces), "input")
    ms.add_mesh(ml.Mesh(mesh.vertices, mesh.faces), "work")
    open_surface = not mesh.is_closed()
    if open_surface:
        ms.meshing_close_holes(maxholesize=10 * mesh.n_faces, selfintersection=False,
                               refinehole=True)
    ms.meshing_isotropic_explicit_remeshing(targetlen=ml.PureValue(edge_mm),
                                            iterations=iterations, featuredeg=180.0,
                                            checksurfdist=False)
    work = ms.current_mesh()
    closed = TriMesh(work.vertex_matrix(), work.face_matrix())
    faces = closed.faces
    if open_surface:
        ms.compute_scalar_by_distance_from_another_mesh_per_vertex(
            measuremesh=1, refmesh=0, signeddist=False)
        dist = np.abs(ms.current_mesh().vertex_scalar_array())
        faces = faces[(dist[faces] <= cap_tol * edge_mm).all(axis=1)]
        if len(faces) == 0:
            raise MeshError(f"remesh: no face of the {edge_mm} mm surface lies on the input")
    used = np.unique(faces)
    cut = TriMesh(closed.vertices[used], np.searchsorted(used, faces))
    # cutting the caps may leave a few faces touching the rim by one corner; dropping them is
    # expected, not news
    out, _ = clean_surface(cut, warn=False)
    if closed.signed_volume() < 0:  # outward: positive volume of the capped surface
        out = TriMesh(out.vertices, out.faces[:, ::-1])
    return out


def wrap_surface(mesh: TriMesh, offset_mm: float = 4.0, edge_mm: float = 5.0,
                 cell_mm: float = 1.0) -> TriMesh:
    """One closed, outward surface around all of ``mesh`` at about ``offset_mm`` from it.

    Used as the heart surface of the Barr transfer (:func:`egmlib.physics.forward.transfer_matrix`)
    when the atria are not convex (a real anatomy), so that no convex hull passes through the
    electrodes. Steps (MeshLab through pymeshlab): holes closed; the ``offset_mm`` isosurface of
    the distance to the surface, extracted on a ``cell_mm`` grid by marching cubes
    (``generate_resampled_uniform_mesh``); its largest part (the outer one); remeshed to
    ``edge_mm``. Both atria end up inside one surface that bridges the concavities between them
    and between the veins.
    """
    if not 0.5 <= offset_mm <= 30.0:
        raise ValueError(f"offset_mm must lie in [0.5, 30] mm; got {offset_mm}")
    if not 0.2 <= cell_mm <= offset_mm:
        raise ValueError(f"cell_mm must lie in [0.2, offset_mm = {offset_mm}] mm; got {cell_mm}")
    from egmlib.physics.surface_io import clean_surface

    ml = _pymeshlab()
    ms = ml.MeshSet()
    ms.add_mesh(ml.Mesh(mesh.vertices, mesh.faces))
    if not mesh.is_closed():
        ms.meshing_close_holes(maxholesize=10 * mesh.n_faces, selfintersection=False,
                               refinehole=True)
    ms.generate_resampled_uniform_mesh(cellsize=ml.PureValue(cell_mm),
                                       offset=ml.PureValue(offset_mm), mergeclosevert=True)
    iso = ms.current_mesh()
    outer, _ = clean_surface((iso.vertex_matrix(), iso.face_matrix()), warn=False)
    return remesh(outer, edge_mm)
