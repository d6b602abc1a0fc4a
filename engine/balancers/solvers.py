"""Small numerical solvers shared by the balancers (all in float64 numpy, on T x T matrices).

- `project_simplex(v)`: Euclidean projection onto the probability simplex.
- `min_norm_simplex(G)`: the min-norm point of the convex hull of task gradients, given only
  their Gramian G = J J^T: argmin_{w in simplex} w^T G w. Exact closed form for T = 2; for
  T > 2 an exact active-set method (Lawson-Hanson NNLS through the reduction below), certified
  by its KKT conditions and polished by projected gradient if the certificate fails.
- `dual_cone_projection(G, v)`: the multipliers that project v^T J onto the cone of directions
  conflicting with no task (an NNLS, by an exact active-set method on the cosine matrix that
  admits only clearly independent gradients, so the multipliers stay bounded).
- `minimize_on_simplex(f, grad, x0, hess)`: a convex function on the simplex: SLSQP, the
  vertices as extra candidates, a projected-gradient polish with backtracking, then Newton
  steps on the solution's face (when a Hessian is given) for machine-precision stationarity.

The NNLS reduction: with R such that R^T R = G, let u >= 0 minimise ||R u||^2 + (1^T u - 1)^2
(an NNLS problem on the stacked matrix [R; 1^T] and target [0; 1]). Its KKT conditions read
G u + (s - 1) 1 >= 0 with equality on the support, s = 1^T u > 0; so w = u / s satisfies
G w >= lambda 1 (equality on the support) with lambda = (1 - s) / s = w^T G w, which are exactly
the KKT conditions of the min-norm problem on the simplex.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize, nnls

from engine.balancers.numerics import nonzero_gradients

Array = np.ndarray

DEPENDENT = 1e-13  # squared sine of the angle between a unit gradient and a span: below it, "in the span"


def project_simplex(v: Array) -> Array:
    """Euclidean projection of `v` onto {w : w >= 0, sum w = 1} (sort-based, O(T log T))."""
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / idx > 0)[0][-1]
    theta = css[rho] / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def _normalised_gramian(G: Array) -> tuple[Array, float]:
    """Symmetrised float64 copy of G divided by its largest diagonal entry (0 if all zero)."""
    G = np.asarray(G, dtype=np.float64)
    G = 0.5 * (G + G.T)
    scale = float(np.max(np.diag(G))) if G.size else 0.0
    if scale > 0.0:
        G = G / scale
    return G, scale


def min_norm_gap(G: Array, w: Array) -> float:
    """Frank-Wolfe duality gap w^T G w - min_i (G w)_i (>= 0; 0 exactly at the optimum)."""
    Gw = G @ w
    return float(w @ Gw - Gw.min())


def min_norm_simplex(G: Array, tol: float = 1e-12) -> Array:
    """argmin over the simplex of w^T G w (the min-norm element of the gradients' convex hull).

    Weights are scale-free (G is normalised by its largest diagonal first). Non-finite input
    gives NaN weights; an all-zero G gives uniform weights. When G is singular the min-norm
    *point* w^T J is unique but the weights need not be; one optimal w is returned.
    """
    G = np.asarray(G, dtype=np.float64)
    T = G.shape[0]
    if not np.all(np.isfinite(G)):
        return np.full(T, np.nan)
    if T == 1:
        return np.ones(1)
    Gn, scale = _normalised_gramian(G)
    if scale <= 0.0:
        return np.full(T, 1.0 / T)
    if T == 2:
        # min over g in [0, 1] of |g g1 + (1 - g) g2|^2: g = (G22 - G12) / |g1 - g2|^2, clipped.
        denom = Gn[0, 0] + Gn[1, 1] - 2.0 * Gn[0, 1]
        gamma = 0.5 if denom <= 1e-15 else float(np.clip((Gn[1, 1] - Gn[0, 1]) / denom, 0.0, 1.0))
        return np.array([gamma, 1.0 - gamma])
    R = _gramian_root(Gn)
    A = np.vstack([R, np.ones((1, T))])
    b = np.zeros(T + 1)
    b[-1] = 1.0
    try:
        u, _ = nnls(A, b, maxiter=50 * T)
        w = u / u.sum() if u.sum() > 0 else np.full(T, 1.0 / T)
    except RuntimeError:  # iteration limit: fall back to the polish below
        w = np.full(T, 1.0 / T)
    w = project_simplex(w)
    if min_norm_gap(Gn, w) > tol:
        w = _polish(lambda x: float(x @ Gn @ x), lambda x: 2.0 * (Gn @ x), w, iters=5000)
    return w


def _gramian_root(G: Array) -> Array:
    """R (T x T) with R^T R = G (eigendecomposition; negative rounding eigenvalues clipped)."""
    evals, evecs = np.linalg.eigh(0.5 * (G + G.T))
    return np.sqrt(np.clip(evals, 0.0, None))[:, None] * evecs.T


def dual_cone_projection(G: Array, v: Array) -> Array:
    """lam >= 0 minimising ||(v + lam)^T J||^2, given only G = J J^T.

    By Moreau's decomposition, (v + lam)^T J is then the Euclidean projection of v^T J onto the
    cone {d : J d >= 0} of directions that conflict with no task (torchjd's DualProj step).

    The projection is unique, the multipliers are not when G is singular (duplicated gradients,
    opposite ones, more tasks than parameters): a basic solution is returned, whose non-zero
    multipliers sit on linearly independent gradients, so they stay bounded and anything computed
    from them through G (||lam^T J||^2 = lam^T G lam) keeps its precision. It comes from an exact
    active-set method (`_cone_nnls`) on the cosine matrix, in the variables n_t lam_t (n_t = ||g_t||),
    so gradient norms differing by orders of magnitude do not matter. Zero rows (||g_t|| <=
    `numerics.ZERO_NORM` of the largest, the cut-off shared by the balancers) get lam_t = 0.
    """
    G = np.asarray(G, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    lam = np.zeros_like(v)
    if not np.all(np.isfinite(G)) or not np.all(np.isfinite(v)) or v.size == 0:
        return lam
    G = 0.5 * (G + G.T)
    diag = np.clip(np.diag(G), 0.0, None)
    nz = nonzero_gradients(diag)
    if not nz.any():
        return lam
    n = np.sqrt(diag[nz])
    C = np.clip(G[np.ix_(nz, nz)] / np.outer(n, n), -1.0, 1.0)  # cosines (|C| > 1: G's rounding)
    np.fill_diagonal(C, 1.0)
    lam[nz] = _cone_nnls(C, n * v[nz]) / n
    return lam


def _cone_nnls(C: Array, u: Array) -> Array:
    """mu >= 0 minimising (u + mu)^T C (u + mu), C a cosine matrix (unit diagonal, PSD).

    Lawson-Hanson's active-set method written on the Gramian: the passive set P holds the
    multipliers allowed to be positive, mu_P solves C_PP mu_P = -(C u)_P, and the gradient
    C (u + mu) is the vector of inner products of the unit gradients with the current point
    (u + mu)^T A. A gradient enters P when its inner product is negative (beyond rounding:
    1e-13 ||u + mu||_1) and it is clearly independent of P's gradients (squared sine of its
    angle to their span above `DEPENDENT`, i.e. the Schur complement of C_PP); one that is in
    that span (a duplicate, an opposite, the P rows' combination) has, in exact arithmetic, a zero
    inner product there, and admitting it on rounding would make C_PP singular and the multipliers
    blow up along its null space (scipy's nnls on a Gramian root does exactly that). The price: a
    gradient within an angle of 3e-7 of P's span can be left with an inner product of at most
    3e-7 times the projection's norm below zero.
    """
    T = u.size
    mu = np.zeros(T)
    P = np.zeros(T, dtype=bool)
    Cu = C @ u

    def solve_on(S: Array) -> Array:  # the least-squares multipliers on the support S
        z = np.zeros(T)
        if S.any():
            try:
                z[S] = np.linalg.solve(C[np.ix_(S, S)], -Cu[S])
            except np.linalg.LinAlgError:  # not expected: S's gradients are clearly independent
                z[S] = np.nan
        return z

    for _ in range(3 * T + 10):
        g = Cu + C @ mu  # mu is the least-squares solution on P here
        tol = 1e-13 * max(float(np.abs(u + mu).sum()), 1e-300)
        idx = np.flatnonzero(P)
        try:
            H = np.linalg.solve(C[np.ix_(idx, idx)], C[idx]) if idx.size else np.zeros((0, T))
        except np.linalg.LinAlgError:  # not expected: P's gradients are clearly independent
            break
        schur = np.diag(C) - np.einsum("ij,ij->j", C[idx], H)  # squared sines to P's span
        free = ~P & (g < -tol) & (schur > DEPENDENT)
        z = None
        if free.any():  # the least squares on P + {j}, from the one on P (block elimination)
            j = int(np.flatnonzero(free)[np.argmin(g[free])])
            z = mu.copy()
            z[j] = -g[j] / schur[j]  # > 0
            z[idx] -= z[j] * H[:, j]
            P[j] = True
        if z is None or not np.all(np.isfinite(z)):
            break
        for _ in range(T + 1):  # back off until every passive multiplier is positive
            if np.all(z[P] > 0.0):
                break
            neg = np.flatnonzero(P & (z <= 0.0))
            ratios = mu[neg] / (mu[neg] - z[neg])
            k = int(np.argmin(ratios))
            mu = mu + ratios[k] * (z - mu)
            P[neg[k]] = False
            P &= mu > 0.0
            z = solve_on(P)
            if not np.all(np.isfinite(z)):
                return np.where(P, np.maximum(mu, 0.0), 0.0)
        mu = np.where(P, z, 0.0)
    z = solve_on(P)  # a last solve on the final support, for full precision
    return np.where(P & np.isfinite(z), np.maximum(z, 0.0), 0.0)


def _polish(f: Callable[[Array], float], grad: Callable[[Array], Array], x: Array, iters: int) -> Array:
    """Projected gradient descent on the simplex with backtracking (Armijo on the quadratic
    upper model); keeps the best point, stops when a step no longer improves f."""
    fx = f(x)
    t = 1.0
    for _ in range(iters):
        g = grad(x)
        while True:
            y = project_simplex(x - t * g)
            fy = f(y)
            d = y - x
            if fy <= fx + g @ d + (d @ d) / (2.0 * t) or t < 1e-20:
                break
            t *= 0.5
        if not fy < fx - 1e-16 * max(1.0, abs(fx)):
            break
        x, fx = y, fy
        t *= 2.0
    return x


def _newton_on_face(
    f: Callable[[Array], float],
    grad: Callable[[Array], Array],
    hess: Callable[[Array], Array],
    x: Array,
    iters: int = 30,
) -> Array:
    """Newton's method on the face of the simplex that `x` lies on (its support), with
    equality-constrained KKT steps [H 1; 1^T 0][dx; mu] = [-g; 0], shortened to stay feasible.

    First-order methods stop where f no longer changes in floating point; on badly scaled G the
    gradient there can still differ across the support by a lot relative to f, and the
    direction built from w (CAGrad's g_w / |g_w|) inherits that error. Newton steps equalise the
    gradient over the support to machine precision. A step is kept when f does not rise by more
    than rounding (1e-14 on a problem normalised to O(1) values); a coordinate outside the
    support whose partial derivative is below the support's joins the face (KKT check).
    """
    support = x > 1e-12
    x = np.where(support, x, 0.0)
    x = x / x.sum()
    fx = f(x)
    slack = 1e-14 * max(1.0, abs(fx))
    for _ in range(iters):
        k = int(support.sum())
        g_all = grad(x)
        g = g_all[support]
        step = np.zeros(k)
        if k >= 2:
            H = hess(x)[np.ix_(support, support)]
            K = np.block([[H, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            step = np.linalg.lstsq(K, np.concatenate([-g, [0.0]]), rcond=None)[0][:k]
            step -= step.mean()  # stay exactly on sum = 1
        if not np.all(np.isfinite(step)):
            break
        if np.abs(step).max() < 1e-15:
            lam = float(g.mean())
            outside = np.where(~support & (g_all < lam - 1e-12 * max(1.0, abs(lam))))[0]
            if outside.size == 0:
                break
            support[outside[np.argmin(g_all[outside])]] = True
            continue
        xs = x[support]
        shrinking = step < 0
        alpha = min(1.0, float(np.min(-xs[shrinking] / step[shrinking]))) if shrinking.any() else 1.0
        for _ in range(40):
            y = x.copy()
            y[support] = np.maximum(xs + alpha * step, 0.0)
            y /= y.sum()
            fy = f(y)
            if fy <= fx + slack:
                break
            alpha *= 0.5
        else:
            break
        x, fx = y, min(fx, fy)
        support = x > 1e-12
    return x


def minimize_on_simplex(
    f: Callable[[Array], float],
    grad: Callable[[Array], Array],
    x0: Array,
    hess: Callable[[Array], Array] | None = None,
    ftol: float = 1e-14,
    polish_iters: int = 2000,
) -> Array:
    """Minimise a convex `f` over the probability simplex (dimension T, small).

    SLSQP from `x0` (bounds [0, 1], sum = 1, analytic gradient), the vertices as extra
    candidates, the best of those polished by projected gradient descent and, when `hess` is
    given, by Newton steps on the face of the simplex the solution lies on.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    T = x0.size
    candidates = [project_simplex(x0), *np.eye(T)]
    res = minimize(
        f,
        x0,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * T,
        constraints=[{"type": "eq", "fun": lambda x: 1.0 - x.sum(), "jac": lambda x: -np.ones_like(x)}],
        options={"ftol": ftol, "maxiter": 500},
    )
    if np.all(np.isfinite(res.x)):
        candidates.append(project_simplex(res.x))
    best = _polish(f, grad, min(candidates, key=f), iters=polish_iters)
    if hess is not None:
        best = _newton_on_face(f, grad, hess, best)
    return best
