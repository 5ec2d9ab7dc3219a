"""The fused CPU kernel of :meth:`egmlib.physics.simulate.Simulator.run` (``backend="numba"``).

One call advances a batch of simulations (columns of a C-ordered float32 (n_nodes, S) state) by
several time steps. Each step is one parallel pass over blocks of stiffness rows: for every node
it forms the diffusion term from its CSR row (the neighbours' voltages of all S columns are one
contiguous row each), then, for every column, the Mitchell-Schaeffer reaction, the stimulus, the
Rush-Larsen gate and (while recording) the up-crossing detection with its interpolated time,
written straight into the activation count / first / last arrays. Nothing per step goes back to
Python; see :mod:`egmlib.physics.simulate` for the equations and the operation order, which this
kernel
repeats term by term in float32 so that it agrees with the torch path to rounding.

Choices (measured on a 2-core AMD EPYC virtual machine, see the README's speed section):

* rows in blocks of ``block`` (32) under ``numba.prange``: one scratch vector of S per block
  instead of per row, and enough blocks (about 110 at 3,500 nodes) for the static split over
  threads;
* no ``fastmath``: the results must not depend on the compiler's reassociation, and every
  entry is computed by one thread in a fixed order, so two runs are identical bit for bit
  whatever the thread count;
* the gate complement y = 1 - h as in the torch path (``_StepBuffers``), updated in place; v
  ping-pongs between two arrays (the caller tracks which one holds the state);
* ``cache=True``: the compiled kernel is stored beside this module and reused by later processes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["BLOCK", "advance"]

#: rows per parallel work item
BLOCK = 32


@numba.njit(parallel=True, cache=True, nogil=True)
def advance(step0, n_steps, n_tr, transient_ms, dt,
            indptr, indices, data,
            v, v_new, y, lv, dd, a_close,
            pace_dt, cl_steps, stim_steps,
            g_scale, leak, v_gate, a_open, v_act,
            count, t_first, t_last, up, keep_lv, keep_up, block):  # pragma: no cover (jitted)
    """Advance steps ``step0 .. step0 + n_steps - 1`` in place.

    Args (arrays C-ordered; (n, S) float32 unless said):
        step0, n_steps: first step index and number of steps.
        n_tr: steps of the transient (activations are detected from this step on).
        transient_ms, dt: for the crossing times (ms after the transient).
        indptr, indices, data: CSR of the lumped Laplacian M^-1 K (int32, int32, float32).
        v, v_new: state and scratch voltages; after an odd ``n_steps`` the state is in
            ``v_new`` (the arrays are swapped once per step).
        y: gate complement 1 - h, updated in place.
        lv: receives the diffusion term (M^-1 K v) of the last step when ``keep_lv``.
        dd: dt * D per node and column.
        a_close: exp(-dt / tau_close) per node and column.
        a_open: (S,) float32 exp(-dt / tau_open) per column (tau_open is a per-simulation
            parameter, constant over the nodes).
        pace_dt: dt * stimulus current per node and column.
        cl_steps: (S,) int64 pacing cycle in steps (0: not paced); column j is stimulated at
            steps with ``step % cl_steps[j] < stim_steps``.
        g_scale, leak, v_gate, v_act: float32 constants (dt / tau_in, tau_in / tau_out,
            gate voltage, activation threshold).
        count (int32), t_first, t_last: activation bookkeeping per node and column.
        up: (n, S) uint8, set to 1 where the last step had an up-crossing when ``keep_up``
            (written in full then; untouched otherwise).
        block: rows per parallel work item.
    """
    n, s = v.shape
    n_blocks = (n + block - 1) // block
    on = np.zeros(s, np.float32)
    one = np.float32(1.0)
    eps = np.float32(1e-12)
    dt32 = np.float32(dt)
    for st in range(step0, step0 + n_steps):
        any_on = False
        for j in range(s):
            c = cl_steps[j]
            if c > 0 and st % c < stim_steps:
                on[j] = one
                any_on = True
            else:
                on[j] = np.float32(0.0)
        detect = st >= n_tr
        t_rel = np.float32(st * dt - transient_ms)
        last = st == step0 + n_steps - 1
        write_lv = keep_lv and last
        write_up = keep_up and last
        for b in numba.prange(n_blocks):
            acc = np.empty(s, np.float32)
            i1 = min(n, (b + 1) * block)
            for i in range(b * block, i1):
                for j in range(s):
                    acc[j] = np.float32(0.0)
                for p in range(indptr[i], indptr[i + 1]):
                    c = indices[p]
                    w = data[p]
                    for j in range(s):
                        acc[j] += w * v[c, j]
                if write_lv:
                    for j in range(s):
                        lv[i, j] = acc[j]
                # the elementwise update, branch-free so that it vectorises over the columns
                n_hit = 0
                for j in range(s):
                    vv = v[i, j]
                    yy = y[i, j]
                    a = vv - vv * vv
                    a = a - a * yy
                    a = a - leak
                    vn = vv + g_scale * vv * a
                    vn = vn - dd[i, j] * acc[j]
                    if any_on:
                        vn = vn + pace_dt[i, j] * on[j]
                    v_new[i, j] = vn
                    ac = a_close[i, j]
                    y[i, j] = yy * a_open[j] if vv < v_gate else (one - ac) + yy * ac
                    n_hit += (vv < v_act) & (vn >= v_act)
                if write_up:
                    for j in range(s):
                        up[i, j] = 0
                # up-crossings are rare: a scalar pass over the row only where there is one
                if detect and n_hit > 0:
                    for j in range(s):
                        vv = v[i, j]
                        vn = v_new[i, j]
                        if vv < v_act and vn >= v_act:
                            frac = (v_act - vv) / (vn - vv + eps)
                            tc = t_rel + dt32 * frac
                            count[i, j] += 1
                            if math.isnan(t_first[i, j]):
                                t_first[i, j] = tc
                            t_last[i, j] = tc
                            if write_up:
                                up[i, j] = 1
        v, v_new = v_new, v
