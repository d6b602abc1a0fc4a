"""Audience episodes cut from one training batch, for MetaHeac's meta-training.

MetaHeac (Zhu et al., KDD 2021) meta-trains over *audiences*: in the paper one audience is one
advertiser's seed set, a small task of its own. Seesaw's datasets have no advertisers, so an
audience here is a group of rows of the batch:

- by a categorical column: the rows sharing one value of it (one occupation in adult, one item
  category in recsys-sim, ...), which is how a real audience is defined (a segment, a campaign);
- or, when there is no categorical column (synthetic-correlation) or when asked for, a random
  partition of the batch into equal groups (episodes without audience structure: MAML on
  identically distributed tasks).

An audience needs `min_rows` rows in the batch (at least one support and one query row); smaller
groups are left out of the step. `choose_audience_column` picks the column for "auto" (see
there); `sample_episode` draws up to `n_audiences` audiences uniformly and splits each into
support and query rows. Everything here is index bookkeeping on the CPU; the model moves the
index tensors to its device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Episode:
    """Row indices into the batch: support rows then query rows, each with its audience index
    in [0, n_audiences). Every audience has at least one support and one query row."""

    support: torch.Tensor  # (n_s,) int64
    support_audience: torch.Tensor  # (n_s,) int64
    query: torch.Tensor  # (n_q,) int64
    query_audience: torch.Tensor  # (n_q,) int64
    n_audiences: int

    @property
    def n_rows(self) -> int:
        return int(self.support.numel() + self.query.numel())

    def to(self, device: torch.device) -> Episode:
        return Episode(
            self.support.to(device),
            self.support_audience.to(device),
            self.query.to(device),
            self.query_audience.to(device),
            self.n_audiences,
        )


def usable_entropy(values: torch.Tensor, min_rows: int) -> float:
    """Entropy (nats) of the batch's rows over the groups of `values` with >= `min_rows` rows;
    rows in smaller groups count as lost (they add nothing), so a column scores high when it
    splits the batch into many groups of similar, usable size."""
    _, counts = torch.unique(values, return_counts=True)
    p = counts[counts >= min_rows].double() / max(int(values.numel()), 1)
    return float(-(p * p.log()).sum())


def choose_audience_column(cat: torch.Tensor, min_rows: int, exclude: Sequence[int] = ()) -> int | None:
    """The categorical column (index into `cat`'s columns) that splits the batch most evenly into
    usable audiences: the largest `usable_entropy`. Entropy, not normalised entropy: a 50/50
    binary column is perfectly even but gives only two audiences, while meta-learning wants many.
    Columns in `exclude` are skipped; None when no column has a usable group. Ties go to the
    first column."""
    best, best_score = None, 0.0
    for j in range(cat.shape[1]):
        if j in exclude:
            continue
        score = usable_entropy(cat[:, j], min_rows)
        if score > best_score + 1e-12:
            best, best_score = j, score
    return best


def audience_groups(values: torch.Tensor, min_rows: int) -> list[torch.Tensor]:
    """Row indices of each group of equal `values` with at least `min_rows` rows (in value order)."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    groups = torch.split(order, counts.tolist())
    return [g for g in groups if g.numel() >= min_rows]


def random_groups(n_rows: int, n_groups: int, min_rows: int) -> list[torch.Tensor]:
    """A random partition of `n_rows` rows into up to `n_groups` groups of (almost) equal size,
    each with at least `min_rows` rows (fewer groups when the batch is too small; one group of
    everything when even `min_rows` rows are not there but two are)."""
    if n_rows < 2:
        return []
    k = max(1, min(n_groups, n_rows // min_rows))
    return list(torch.tensor_split(torch.randperm(n_rows), k))


def split_support_query(groups: Sequence[torch.Tensor], support_fraction: float) -> Episode:
    """Shuffle each group and put round(fraction * n) of its rows (at least one, at most n - 1)
    into the support set, the rest into the query set."""
    sup, sup_a, qry, qry_a = [], [], [], []
    for a, g in enumerate(groups):
        n = int(g.numel())
        g = g[torch.randperm(n)]
        n_s = min(max(round(support_fraction * n), 1), n - 1)
        sup.append(g[:n_s])
        qry.append(g[n_s:])
        sup_a.append(torch.full((n_s,), a, dtype=torch.long))
        qry_a.append(torch.full((n - n_s,), a, dtype=torch.long))
    return Episode(torch.cat(sup), torch.cat(sup_a), torch.cat(qry), torch.cat(qry_a), len(groups))


def sample_episode(
    values: torch.Tensor | None,
    n_rows: int,
    n_audiences: int,
    support_fraction: float,
    min_rows: int,
) -> Episode | None:
    """One step's episode. `values` (n_rows,): the audience key of each row, or None for a random
    partition. Up to `n_audiences` of the usable groups are drawn uniformly without replacement;
    when the key leaves no usable group in this batch the batch is partitioned at random instead.
    None only when the batch has fewer than two rows (nothing to split)."""
    groups: list[torch.Tensor] = []
    if values is not None:
        groups = audience_groups(values.detach().cpu(), min_rows)
        if len(groups) > n_audiences:
            pick = torch.randperm(len(groups))[:n_audiences].sort().values
            groups = [groups[int(i)] for i in pick]
    if not groups:
        groups = random_groups(n_rows, n_audiences, min_rows)
    if not groups:
        return None
    return split_support_query(groups, support_fraction)
