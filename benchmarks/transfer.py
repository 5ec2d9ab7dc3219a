"""Timing the potential-to-potential transfer matrix (``make bench``, section ``transfer``)."""

from __future__ import annotations

import time

from egmlib.physics.forward import heart_surface, transfer_matrix
from egmlib.physics.torso import Torso


def time_transfer_matrix(n_rec: int, tissue_edge_mm: float = 2.0, torso: Torso | None = None
                         ) -> dict[str, float]:
    """Build the transfer matrix for ``n_rec`` recording sites on the bi-atrial geometry and the
    nominal torso; returns the seconds spent and the sizes (for the benchmarks).

    Measured on a 2-core AMD EPYC virtual machine with the nominal torso (606 nodes, 1208
    faces): n_rec 256 -> 0.9 s, 512 -> 1.5 s, 2048 -> 9.2 s (about 0.3 GB peak for the dense
    blocks at 2048).
    """
    from egmlib.physics.geometry import biatrial_geometry, recording_sites
    from egmlib.physics.torso import make_torso

    geom = biatrial_geometry(edge_mm=tissue_edge_mm)
    sites = recording_sites(geom, n_rec)
    t = torso or make_torso()
    t0 = time.perf_counter()
    heart = heart_surface(sites.electrodes, geom.region[sites.vertex])
    t1 = time.perf_counter()
    a = transfer_matrix(heart.vertices, heart.faces, t.mesh.vertices, t.mesh.faces)
    t2 = time.perf_counter()
    return {"n_rec": int(n_rec), "n_heart_faces": heart.n_faces,
            "n_torso_vertices": t.mesh.n_vertices, "n_torso_faces": t.mesh.n_faces,
            "heart_surface_s": t1 - t0, "transfer_matrix_s": t2 - t1,
            "shape": list(a.shape)}
