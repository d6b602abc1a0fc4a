"""Numerical conventions shared by the gradient balancers: what counts as a zero gradient, and how
the Gramian is scaled before the weights are solved.

Zero gradients. A task gradient g_t counts as zero when ||g_t|| <= ZERO_NORM max_k ||g_k|| (on
the Gramian: G_tt <= ZERO_NORM_SQ max_k G_kk, `nonzero_gradients`). It then constrains nothing
and takes no part in the solve (PCGrad, GradVac and GradCraft project against no zero gradient,
UPGrad's and CAGrad's cones ignore it, Nash-MTL and IMTL give it weight 0; DB-MTL and
MetaBalance do not rescale it). One value for every method. Why relative, and why 1e-12:

- relative to the largest norm, so that it does not depend on the gradients' scale (a loss
  multiplied by 1e-20 is the same problem; with the scaling below, so is a Jacobian of 1e-161);
- it need not be near the rounding level sqrt(eps) ~ 1.5e-8: a Gramian computed from J has
  G_ij accurate to about P eps ||g_i|| ||g_j||, relative to the product of the two norms, so
  the direction of a small gradient is known to full relative precision however small it is,
  and the methods solve on cosines (UPGrad, Nash-MTL, IMTL, CAGrad's cone and min-norm point)
  or on ratios of Gramian entries (PCGrad, GradVac, GradCraft). For the non-conflict methods
  a gradient above the cut-off stays a full constraint, as it should (their cones are
  scale-free: a task whose gradient is 1e-9 of another's must still not be made worse);
- what it has to stop is the blow-up of those ratios: a gradient of relative norm r gets
  weights or multipliers of order 1/r (PCGrad's g_i . g_j / ||g_j||^2, UPGrad's lambda_t,
  Nash-MTL's 1 / ||g_t||), and r -> 0 is where "conflicts" or "forbids any move" turns on
  rounding (a norm of 1e-160 next to 1). At 1e-12 those weights stay within 1e12 of the
  others, well inside float32's range for the logged weights and for w @ J in a float32 model;
- what it ignores is negligible: a dropped gradient contributes below 1e-12 of the largest
  to the update (below float32's 6e-8 resolution of it), and a non-conflict method can
  decrease its task by at most 1e-12 M ||d|| to first order;
- it is the value most methods here used already (PCGrad, UPGrad, IMTL, Nash-MTL, GradVac,
  GradCraft on the squared norm, DB-MTL and MetaBalance on the norm). CAGrad cut at 5.5e-9
  (3e-17 on the squared norm): its dual is solved on f / ||g0|| of the normalised Gramian and
  its degenerate band is relative to m_w = sum_t w_t ||g_t|| / max ||g||, so a gradient between
  1e-12 and 5.5e-9 of the largest is an ordinary small gradient there (the order-independence
  tests pass with gradients placed at 2e-12 ... 1e-8 of the largest).

Scaling. The weights of every Gramian-based method here are homogeneous in the Gramian,
w(c G) = c^k w(G) with k = 0 (scale-invariant: MGDA with "none"/"loss", PCGrad, UPGrad, IMTL,
CAGrad, Aligned-MTL, GradVac, GradCraft) or k = -1/2 (Nash-MTL, MGDA with "l2"/"loss+"), while
J J^T itself can underflow (gradient entries of 1e-161: products of 1e-322, subnormal or 0 in
float64) or overflow (entries of 1e155). So the Gramian is taken of J / s, s a power of two
(`engine.gradients.scaled_gramian`: exact, a division by a power of two), the weights are solved
on it and mapped back with s^(2k) (also exact); see
`GradientAggregation.weights_from_scaled_gramian`. For ordinary magnitudes nothing changes (a
power-of-two scaling commutes with rounding), and w @ J is the same direction at any scale.
"""

from __future__ import annotations

import math

import numpy as np

#: relative to the largest ||g_t||: at or below this a task gradient counts as zero (module docstring)
ZERO_NORM = 1e-12
#: the same cut-off on the Gramian's diagonal, relative to its largest entry
ZERO_NORM_SQ = ZERO_NORM**2


def nonzero_gradients(diag: np.ndarray) -> np.ndarray:
    """Mask of the gradients that are not zero, from the Gramian's diagonal ||g_t||^2: above
    ZERO_NORM_SQ of the largest and above 0 (all False when all are 0 or one is NaN)."""
    d = np.clip(np.asarray(diag, dtype=np.float64), 0.0, None)
    top = float(d.max()) if d.size else 0.0
    return (d > ZERO_NORM_SQ * top) & (d > 0.0)


def rescale(value: float, s: float, degree: int) -> float:
    """value * s^degree for a power of two s, by exponent arithmetic: exact unless it leaves
    float64's range (then +-inf, or a rounded subnormal / 0)."""
    try:
        return math.ldexp(value, (math.frexp(s)[1] - 1) * degree)
    except OverflowError:
        return math.copysign(math.inf, value)
