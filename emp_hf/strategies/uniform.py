"""`random`: uniform dynamic pruning, a fresh uniform sample of the rows every pruned epoch."""

from __future__ import annotations

import torch

from .base import PruningStrategy, Selection, Tables
from .registry import register_strategy


@register_strategy
class UniformRandom(PruningStrategy):
    name = "random"
    required_tables = frozenset({"loss", "entropy"})

    def select(self, tables: Tables, num_keep: int, generator: torch.Generator) -> Selection:
        n = tables["frequency"].numel()
        return Selection(rows=torch.randperm(n, generator=generator, device=generator.device)[:num_keep])
