"""`none`: the control arm. Every epoch trains on all rows; statistics are still tracked."""

from __future__ import annotations

import torch

from .base import PruningStrategy, Selection, Tables
from .registry import register_strategy


@register_strategy
class NoPruning(PruningStrategy):
    name = "none"
    required_tables = frozenset({"loss", "entropy"})

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        return Selection(rows=torch.arange(tables["frequency"].numel(), device=tables["frequency"].device))
