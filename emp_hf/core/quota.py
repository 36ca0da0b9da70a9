"""Per-class quotas: a pruned epoch's `K` rows split among the classes, each class's share chosen by the rule.

`class_quotas` splits the budget: `"balanced"` gives every class the same number of rows (a class with fewer rows
keeps all of them, and what it leaves goes to the others: water-filling), `"proportional"` gives each class its
share of the training set (largest remainders). `select_by_class` then asks the strategy for each class's quota
among that class's rows, so the score decides only which rows of a class, never how many.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

QUOTA_RULES = ("balanced", "proportional")


def class_quotas(counts: list[int], num_keep: int, rule: str) -> list[int]:
    """How many of the `num_keep` rows each class gets (`counts[c]`: rows of class `c`; the quotas sum to
    `min(num_keep, sum(counts))`, each at most its class's rows; leftover rows go to the lower class ids)."""
    if rule not in QUOTA_RULES:
        raise ValueError(f"Unknown class quota rule {rule!r}: choose one of {list(QUOTA_RULES)}.")
    total = sum(counts)
    num_keep = min(num_keep, total)
    if rule == "proportional":
        exact = [num_keep * n / total for n in counts]
        quotas = [int(x) for x in exact]
        leftover = num_keep - sum(quotas)
        by_remainder = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), c))
        for c in by_remainder[:leftover]:
            quotas[c] += 1
        return quotas
    quotas = [0] * len(counts)
    remaining, open_classes = num_keep, [c for c in range(len(counts)) if counts[c] > 0]
    while open_classes:  # water-filling: the smallest classes keep every row, the rest share what is left evenly
        share = remaining // len(open_classes)
        full = [c for c in open_classes if counts[c] <= share]
        if not full:
            extra = remaining - share * len(open_classes)
            for i, c in enumerate(open_classes):
                quotas[c] = share + (1 if i < extra else 0)
            return quotas
        for c in full:
            quotas[c] = counts[c]
            remaining -= counts[c]
        open_classes = [c for c in open_classes if c not in full]
    return quotas


Select = Callable[[dict[str, torch.Tensor], int], "tuple[torch.Tensor, torch.Tensor | None]"]


def select_by_class(
    tables: dict[str, torch.Tensor],
    classes: torch.Tensor,
    num_keep: int,
    rule: str,
    select: Select,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows (and weights, if the strategy gives any) of a pruned epoch with per-class quotas.

    `classes` is each row's class id (int64, >= 0); `select(class_tables, quota)` is the strategy's choice among one
    class's rows (`class_tables`: every table restricted to them), returning local row indices and optional local
    weights. Classes are asked in ascending id order, so the generator `select` draws from is used the same way on
    every process.
    """
    num_classes = int(classes.max()) + 1 if classes.numel() else 0
    counts = torch.bincount(classes, minlength=num_classes).tolist()
    quotas = class_quotas(counts, num_keep, rule)
    rows, weight = [], None
    for c, quota in enumerate(quotas):
        if quota == 0:
            continue
        members = torch.nonzero(classes == c).flatten().to(next(iter(tables.values())).device)
        local_rows, local_weight = select({name: table[members] for name, table in tables.items()}, quota)
        rows.append(members[local_rows])
        if local_weight is not None:
            if weight is None:
                weight = torch.ones(classes.numel(), dtype=torch.float32, device=members.device)
            weight[members] = local_weight
    if not rows:
        return torch.zeros(0, dtype=torch.int64), weight
    return torch.cat(rows), weight
