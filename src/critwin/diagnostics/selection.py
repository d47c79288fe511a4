"""Choosing a batch among candidates so that an attribute's counts come as close to a target as the
candidates allow: the selection step of :func:`critwin.diagnostics.fairness.rebalance`.

- :func:`select_to_target`: one candidate per trajectory (continuations of one forked state), the least
  squared distance to the quotas over all trajectories at once (a min-cost flow), so that what each
  trunk decided stays;
- :func:`select_from_pool`: any ``n`` of the candidates (independent generations from the prior), the
  least squared distance to the quotas, plain samples kept in their own slot.
"""

from __future__ import annotations

import numpy as np

__all__ = ["integer_quotas", "select_to_target", "select_from_pool"]


def integer_quotas(target: np.ndarray, n: int) -> np.ndarray:
    """(C,) whole counts summing to ``n`` closest to ``target * n`` (largest remainders; ties: lower value).

    Examples
    --------
    >>> integer_quotas(np.array([1 / 3, 1 / 3, 1 / 3]), 10).tolist()
    [4, 3, 3]
    """
    exact = np.asarray(target, dtype=float) * n
    quotas = np.floor(exact).astype(int)
    remainders = exact - quotas
    order = sorted(range(quotas.size), key=lambda c: (-remainders[c], c))
    quotas[order[: n - int(quotas.sum())]] += 1
    return quotas


def select_to_target(candidate_labels: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Per trajectory, one of its candidates, so that the batch's counts come as close to the quotas as any
    such choice can (least squared distance), then with the fewest trajectories moved off their plain
    (first) candidate.

    Parameters
    ----------
    candidate_labels : (n_candidates, n) labels of every trajectory's candidates (row 0: the plain sample).
    quotas : (C,) wanted counts (``target * n``; rounded by :func:`integer_quotas`).

    Returns
    -------
    (n,) index of the chosen candidate of each trajectory (the first candidate with the chosen label).

    Notes
    -----
    A min-cost flow with convex costs, solved as a linear programme whose matrix is totally unimodular (so
    its simplex vertex is whole). Trajectories are grouped by (labels among their candidates, plain
    label); a group of ``s`` trajectories sends ``s`` units to the values it can produce; value ``c``'s
    ``j``-th unit costs ``(j - q_c)^2 - (j - 1 - q_c)^2 = 2 (j - q_c) - 1`` (increasing in ``j``, so the
    units cost ``(count_c - q_c)^2`` up to a constant); a unit sent off its group's plain label costs
    ``1 / (2 n + 2)``, less than any difference of the squared distance even summed over all ``n``.
    The squared distance, not the TV, is what is minimised: where quotas cannot all be met (a value no
    continuation reaches), the TV has many minimisers, and the squared distance picks the balanced one.

    Examples
    --------
    >>> select_to_target(np.array([[0, 0, 1], [0, 1, 1]]), np.array([1.0, 2.0])).tolist()
    [0, 1, 0]
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_array

    n_candidates, n = candidate_labels.shape
    quotas = integer_quotas(np.asarray(quotas, dtype=float) / n, n)
    groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
    for i in range(n):
        key = (tuple(np.unique(candidate_labels[:, i]).tolist()), int(candidate_labels[0, i]))
        groups.setdefault(key, []).append(i)
    arcs = [(g, c) for g, (options, _) in enumerate(groups) for c in options]
    reach = np.zeros(quotas.size, dtype=int)  # trajectories that can produce each value
    for (options, _), members in zip(groups, groups.values(), strict=True):
        reach[list(options)] += len(members)
    units = [(c, j) for c in range(quotas.size) for j in range(1, reach[c] + 1)]
    plain = [key[1] for key in groups]
    cost = [0.0 if c == plain[g] else 1.0 / (2 * n + 2) for g, c in arcs]
    cost += [2.0 * (j - quotas[c]) - 1.0 for c, j in units]
    # Rows: one per group (its supply), then one per value (what arrives leaves through its units).
    row = [g for g, _ in arcs] + [len(groups) + c for _, c in arcs] + [len(groups) + c for c, _ in units]
    column = list(range(len(arcs))) * 2 + list(range(len(arcs), len(arcs) + len(units)))
    value = [1.0] * (2 * len(arcs)) + [-1.0] * len(units)
    equalities = coo_array((value, (row, column)), shape=(len(groups) + quotas.size, len(cost))).tocsr()
    supplies = np.r_[[len(members) for members in groups.values()], np.zeros(quotas.size)]
    bounds = [(0, None)] * len(arcs) + [(0, 1)] * len(units)
    solution = linprog(cost, A_eq=equalities, b_eq=supplies, bounds=bounds, method="highs-ds")
    if not solution.success:  # a feasible transportation problem: this is a solver failure
        raise RuntimeError(f"select_to_target: the assignment programme failed ({solution.message})")
    flows = np.rint(solution.x[: len(arcs)]).astype(int)
    choice = np.zeros(n, dtype=int)
    members = {g: iter(trajectories) for g, trajectories in enumerate(groups.values())}
    for (g, c), sent in zip(arcs, flows, strict=True):
        for _ in range(sent):
            i = next(members[g])
            choice[i] = int(np.nonzero(candidate_labels[:, i] == c)[0][0])
    return choice


def select_from_pool(candidate_labels: np.ndarray, quotas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of the ``n_candidates * n`` candidates, as close to the quotas as the pool allows (least
    squared distance), keeping plain samples (row 0) in their own slot wherever their value is wanted.

    For candidates that are independent generations (:func:`rebalance` with ``fork_time = inf``) a
    trajectory is only a label: any candidate may fill any slot, so the batch reaches a value's quota
    whenever the pool holds that many (a trajectory-by-trajectory choice needs one in each trajectory).

    Parameters
    ----------
    candidate_labels : (n_candidates, n) labels (row 0: the plain samples).
    quotas : (C,) wanted counts (``target * n``; rounded by :func:`integer_quotas`).

    Returns
    -------
    (rows, columns) : (n,) each; slot ``i`` holds candidate ``rows[i]`` of trajectory ``columns[i]``
    (``(0, i)`` where the plain sample ``i`` is kept).

    Notes
    -----
    The counts are filled one unit at a time, each to the value furthest below its quota among those the
    pool still holds: for a separable convex cost (the squared distance) this greedy is optimal.

    Examples
    --------
    >>> rows, columns = select_from_pool(np.array([[0, 0, 0], [1, 1, 0]]), np.array([1.0, 2.0]))
    >>> rows.tolist(), columns.tolist()
    ([0, 1, 1], [0, 0, 1])
    """
    n_candidates, n = candidate_labels.shape
    quotas = integer_quotas(np.asarray(quotas, dtype=float) / n, n)
    available = np.bincount(candidate_labels.ravel(), minlength=quotas.size)
    plain_counts = np.bincount(candidate_labels[0], minlength=quotas.size)
    counts = np.zeros(quotas.size, dtype=int)
    for _ in range(n):
        open_values = np.nonzero(counts < available)[0]
        # Furthest below quota; among equals, a value with plain samples still unkept, then the lowest.
        c = min(open_values, key=lambda c: (counts[c] - quotas[c], counts[c] >= plain_counts[c], c))
        counts[c] += 1
    rows, columns = np.zeros(n, dtype=int), np.arange(n)
    free, substitutes = [], []
    for c in range(quotas.size):
        plain = np.nonzero(candidate_labels[0] == c)[0]
        free.extend(plain[counts[c] :].tolist())
        wanted = max(0, int(counts[c]) - plain.size)
        substitutes.extend(np.argwhere(candidate_labels[1:] == c)[:wanted].tolist())
    for slot, (row, column) in zip(sorted(free), substitutes, strict=True):
        rows[slot], columns[slot] = row + 1, column
    return rows, columns
