"""What a network window's sampling rate keeps of the 500 Hz electrograms (the ``fs`` choice).

The simulator records EGMs at 500 Hz (:data:`~egmlib.data.store.RECORD_FS`); the windows the
networks see are resampled to ``fs`` by the same polyphase filter as the data build
(:func:`~egmlib.data.store.windows`, ``scipy.signal.resample_poly``). :func:`sampling_study`
measures, for each candidate rate, on the 500 Hz example traces a data set keeps:

* ``slope_ratio``: the steepest deflection (max ``|dV/dt|``) at ``fs`` over that at 500 Hz, median
  over traces: unipolar intrinsic deflections last a few ms, so a low rate blunts them (the
  morphology metrics and local activation times depend on them);
* ``roundtrip_corr``: correlation between a 500 Hz trace and the same trace resampled to ``fs``
  and back, median over traces: the share of the waveform the ``fs`` samples carry;
* ``df_error_hz``: median ``|DF at fs - DF at 500 Hz|`` per rhythm
  (:func:`~egmlib.core.metrics.rhythm_df`): what the spectral metrics lose;
* ``samples_per_window``: the window length in samples for a window of ``window_s`` seconds,
  which sets the generators' cost (linear in T for the convolutional VAEs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.signal import resample_poly

from egmlib.core import metrics
from egmlib.data.store import LABELS, RECORD_FS

__all__ = ["DEFAULT_RATES", "sampling_study"]

#: Candidate window rates (Hz): divisors of the 500 Hz record.
DEFAULT_RATES = (100.0, 250.0, 500.0)


def sampling_study(egm_500hz: ArrayLike, labels: ArrayLike,
                   rates: Sequence[float] = DEFAULT_RATES, window_s: float = 4.0
                   ) -> dict[str, dict[str, Any]]:
    """Per rate (key ``"100"``, ``"250"``, ...), the measures of the module docstring.

    Args:
        egm_500hz: (S, n_sites, n_samples) EGM traces at 500 Hz (mV).
        labels: (S,) rhythm label per simulation (index into :data:`LABELS`).
        rates: candidate rates; each must divide 500 Hz.
        window_s: window duration for ``samples_per_window``.
    """
    x = np.asarray(egm_500hz, np.float64)
    lab = np.asarray(labels)
    if x.ndim != 3 or lab.shape != (len(x),):
        raise ValueError(f"egm_500hz must be (S, n_sites, n_samples) with one label per "
                         f"simulation; got {x.shape} and {lab.shape}")
    for fs in rates:
        if not 0 < fs <= RECORD_FS or abs(RECORD_FS / fs - round(RECORD_FS / fs)) > 1e-9:
            raise ValueError(f"rates: {fs} Hz does not divide {RECORD_FS:g} Hz")
    x = x - x.mean(axis=-1, keepdims=True)
    slope_ref = np.abs(np.diff(x, axis=-1)).max(axis=-1) * RECORD_FS
    # the metrics take (..., time, channel)
    df_ref = {r: metrics.rhythm_df(x[lab == i].swapaxes(1, 2), RECORD_FS, r)
              for i, r in enumerate(LABELS) if (lab == i).any()}
    out: dict[str, dict[str, Any]] = {}
    for fs in rates:
        q = round(RECORD_FS / fs)
        # the data build's filter (store.windows) down, and back up for the round trip
        y = resample_poly(x, 1, q, axis=-1) if q > 1 else x
        slope = np.abs(np.diff(y, axis=-1)).max(axis=-1) * fs
        back = resample_poly(y, q, 1, axis=-1)[..., :x.shape[-1]] if q > 1 else y
        corr = metrics.pearson(back.swapaxes(1, 2), x.swapaxes(1, 2))
        df_err = {}
        for i, r in enumerate(LABELS):
            if (lab == i).any():
                df = metrics.rhythm_df(y[lab == i].swapaxes(1, 2), fs, r)
                df_err[r] = float(np.median(np.abs(df - df_ref[r])))
        out[f"{fs:g}"] = {"slope_ratio": float(np.median(slope / slope_ref)),
                          "roundtrip_corr": float(np.median(corr)),
                          "df_error_hz": df_err,
                          "samples_per_window": round(window_s * fs)}
    return out
