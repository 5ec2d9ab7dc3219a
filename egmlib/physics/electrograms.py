"""Unipolar electrograms by the current-source approximation.

In a homogeneous unbounded volume conductor, the extracellular potential at an electrode x is::

    phi(x) = 1 / (4 pi sigma_e) * integral I_m(y) / |x - y| dA(y),

with I_m the transmembrane current per unit area. In the monodomain model, with intracellular
voltage close to V_m, I_m = h sigma_i div(grad V_m) for a wall of thickness h (Plonsey & Barr,
*Bioelectricity*, ch. 8; Gima & Rudy, Circ. Res. 90:889, 2002). With P1 finite elements and a
lumped mass, the integral over node n's area of the surface Laplacian is -(K V_m)_n, so::

    phi = (beta / 4 pi) * sum_n q_n / |x - y_n|,   q_n = -(D_n / D_ref) (K V_m)_n,

where beta = h sigma_i / sigma_e is taken as 1 mm (wall ~2 mm, sigma_i / sigma_e ~ 0.5) and the
local intracellular conductivity scales with the local diffusivity D (D_ref = 1 mm^2/ms). The
EGM is in mV. Ahead of a wavefront the sources are positive (current leaves the resting cells),
behind it they are negative: a passing wave gives a biphasic deflection, positive first.

The simulator records ``lead @ q`` for any lead matrix, so EGMs, and through
:mod:`egmlib.physics.forward`, BSPMs, come from one set of sources.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from egmlib.physics.forward import infinite_medium
from egmlib.physics.simulate import V_SCALE

__all__ = ["BETA_MM", "EGM_SCALE", "current_sources", "infinite_medium_lead_field"]

#: h * sigma_i / sigma_e (mm): the scale between the lumped Laplacian and the source strength.
BETA_MM = 1.0
#: beta / (4 pi) (mm): the factor from a 1/r-convention lead field to EGMs (and BSPMs) in mV.
EGM_SCALE = BETA_MM / (4.0 * np.pi)


def infinite_medium_lead_field(electrodes: ArrayLike, nodes: ArrayLike) -> NDArray[np.float64]:
    """The matrix G (n_electrodes, n_nodes) with ``phi = G @ q``: ``beta / (4 pi |x_e - y_n|)``, the
    1/r kernel of :func:`egmlib.physics.forward.infinite_medium` in the units of the EGMs (mV).

    Raises ValueError when an electrode lies on a node (the 1/r kernel is singular).
    """
    return EGM_SCALE * infinite_medium(electrodes, nodes)


def current_sources(stiffness: sparse.spmatrix, v: ArrayLike, d_rel: ArrayLike) -> NDArray:
    """Sources q = -(D/D_ref) * (K V_m) (mV) for dimensionless voltages ``v`` (n_nodes, ...).

    The same quantity the batched simulator records (``K`` must include the links it used).
    """
    v = np.asarray(v, float)
    kv = stiffness @ v
    d = np.asarray(d_rel, float).reshape((-1,) + (1,) * (v.ndim - 1))
    return -V_SCALE * d * kv
