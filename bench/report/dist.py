"""Scalar Student-t, non-central t and χ² functions for the report's statistics, equal bit for bit
to scipy.stats' (tests/test_report_scale.py checks them against it).

Why: a report computes an interval, a p-value and a minimum detectable effect for every paired Δ
— tens of thousands at a thousand runs — and the MDE solves for a non-centrality with ~25
non-central t evaluations. Each ``scipy.stats.<dist>.<fn>(scalar)`` call spends ~60 µs
checking and broadcasting its arguments before the special function runs; the special function
itself is a few µs. These call the same special functions scipy.stats calls for valid
arguments (``scipy.special.stdtr``/``stdtrit``/``ndtri``, and for the non-central t the
special functions behind ``scipy.stats.nct._sf``/``_cdf``) and fall back to scipy.stats for
anything else, so every number stays what it was. scipy.stats itself is imported only for such a
fallback: importing it costs ~0.4 s, a tenth of a report after one more run.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special as sc
from scipy.special import _ufuncs as scu  # nct's survival function lives only here (what scipy.stats.nct._sf calls)

_NCT_SF = getattr(scu, "_nct_sf", None)  # private to scipy: where a release drops it, scipy.stats answers


def _sps():
    """scipy.stats, imported when first needed (a report whose estimates are all remembered needs none)."""
    from scipy import stats

    return stats


def _valid(*values: float) -> bool:
    return all(isinstance(v, (int, float, np.floating)) and not math.isnan(v) for v in values)


def t_ppf(q: float, df: float) -> float:
    """``scipy.stats.t.ppf(q, df)``."""
    if _valid(q, df) and 0 < q < 1 and df > 0:
        return float(sc.stdtrit(df, q))
    return float(_sps().t.ppf(q, df))


def t_sf(x: float, df: float) -> float:
    """``scipy.stats.t.sf(x, df)``."""
    if _valid(x, df) and math.isfinite(x) and df > 0:
        return float(sc.stdtr(df, -x))
    return float(_sps().t.sf(x, df))


def t_cdf(x: float, df: float) -> float:
    """``scipy.stats.t.cdf(x, df)``."""
    if _valid(x, df) and math.isfinite(x) and df > 0:
        return float(sc.stdtr(df, x))
    return float(_sps().t.cdf(x, df))


def nct_sf(x: float, df: float, nc: float) -> float:
    """``scipy.stats.nct.sf(x, df, nc)``."""
    if _NCT_SF is not None and _valid(x, df, nc) and math.isfinite(x) and df > 0:
        with np.errstate(over="ignore"):  # as scipy.stats.nct._sf does
            return float(np.clip(_NCT_SF(np.float64(x), np.float64(df), np.float64(nc)), 0, 1))
    return float(_sps().nct.sf(x, df, nc))


def nct_cdf(x: float, df: float, nc: float) -> float:
    """``scipy.stats.nct.cdf(x, df, nc)``."""
    if _valid(x, df, nc) and math.isfinite(x) and df > 0:
        return float(sc.nctdtr(np.float64(df), np.float64(nc), np.float64(x)))
    return float(_sps().nct.cdf(x, df, nc))


def norm_ppf(q: float) -> float:
    """``scipy.stats.norm.ppf(q)``."""
    if _valid(q) and 0 < q < 1:
        return float(sc.ndtri(q))
    return float(_sps().norm.ppf(q))


@lru_cache(maxsize=4096)
def chi2_ppf(q: float, df: float) -> float:
    """``scipy.stats.chi2.ppf(q, df)`` (asked for a handful of seed counts: remembered)."""
    if _valid(q, df) and 0 < q < 1 and df > 0 and math.isfinite(df):
        return float(2 * sc.gammaincinv(df / 2, q))
    return float(_sps().chi2.ppf(q, df))


@lru_cache(maxsize=4096)
def t_ppf_cached(q: float, df: float) -> float:
    """:func:`t_ppf` remembered: the seed-level intervals ask it for a few seed counts only."""
    return t_ppf(q, df)


__all__ = ["t_ppf", "t_sf", "t_cdf", "nct_sf", "nct_cdf", "norm_ppf", "chi2_ppf", "t_ppf_cached"]
