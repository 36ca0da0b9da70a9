"""The loss weights of the current epoch, one per row, stored as a one-byte code into the few values they take.

A weighted strategy's weights take very few distinct values: InfoBatch and EMP's `soft` rule weight a row `1` or
`1 / (1 - r)`. `LossWeights` keeps a `uint8` code per row and a float32 table of the distinct values (up to 256),
so every process holds the whole table (the per-batch path reads the weight of any row it trains) at 1 byte a row
instead of 4. The weights read back are exactly the float32 values the strategy returned; weights with more than
256 distinct values are kept as they are, 4 bytes a row.
"""

from __future__ import annotations

import torch

#: Distinct values a `uint8` code can index.
MAX_CODES = 256


class LossWeights:
    """Per-row loss weights (`num_rows + 1` entries: the last is the tracker's trash slot), read by row index.

    `codes` is `uint8` with `values` the float32 table it indexes, or float32 weights themselves (`values` None).
    """

    def __init__(self, codes: torch.Tensor, values: torch.Tensor | None) -> None:
        self.codes = codes
        self.values = values

    @classmethod
    def ones(cls, num_rows: int, device: torch.device | str) -> LossWeights:
        """Every row (and the trash slot) weighted 1."""
        codes = torch.zeros(num_rows + 1, dtype=torch.uint8, device=device)
        return cls(codes, torch.ones(1, dtype=torch.float32, device=device))

    @classmethod
    def encode(cls, weight: torch.Tensor, device: torch.device | str) -> LossWeights:
        """The weights of `num_rows` rows (float32 on `device`; the trash slot gets weight 1). Two distinct values
        are coded without a sort (the usual case), up to 256 with `torch.unique`; more are stored as float32."""
        weight = weight.to(device, torch.float32).reshape(-1)
        with_trash = torch.cat([weight, weight.new_ones(1)])  # the trash slot's 1 is one of the values
        low, high = torch.aminmax(with_trash)
        if bool(low == high):  # every weight is 1
            return cls.ones(weight.numel(), device)
        is_high = with_trash == high
        if bool(is_high.logical_or(with_trash == low).all()):
            return cls(is_high.to(torch.uint8), torch.stack([low, high]))
        del is_high
        values, inverse = torch.unique(with_trash, return_inverse=True)
        if values.numel() <= MAX_CODES:
            return cls(inverse.to(torch.uint8), values)
        return cls(with_trash, None)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """The float32 weights of `rows` (two gathers; no host synchronisation)."""
        codes = self.codes[rows]
        return codes if self.values is None else self.values[codes.int()]

    def dense(self) -> torch.Tensor:
        """Every row's weight as float32 (`num_rows + 1` entries, a new tensor)."""
        return self.codes.clone() if self.values is None else self.values[self.codes.int()]

    def nbytes(self) -> int:
        """Bytes held (the codes and the value table)."""
        values = 0 if self.values is None else self.values.numel() * self.values.element_size()
        return self.codes.numel() * self.codes.element_size() + values

    def to(self, device: torch.device | str) -> LossWeights:
        return LossWeights(self.codes.to(device), None if self.values is None else self.values.to(device))
