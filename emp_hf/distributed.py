"""Gather per-example observations from every process: int64 rows and float32 values, separately."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate import Accelerator


def gather_observations(
    accelerator: Accelerator, rows: torch.Tensor, loss: torch.Tensor, entropy: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All processes' `(rows, loss, entropy)` of one micro-batch, in process order.

    Rows stay int64 (a float gather corrupts ids above 2**24, or 256 in bf16). Each process pads its batch to
    `batch_size` with row -1 first, so no sizes need gathering (no extra collective, no host sync); the
    tracker ignores the padding and the duplicates that `even_batches` adds.
    """
    values = torch.stack([loss.float(), entropy.float()], dim=1)
    rows = rows.to(values.device, torch.int64)
    if accelerator.num_processes > 1:
        pad = batch_size - rows.numel()
        if pad < 0:
            raise ValueError(f"A micro-batch of {rows.numel()} rows exceeds the per-device batch size {batch_size}.")
        rows = F.pad(rows, (0, pad), value=-1)
        values = F.pad(values, (0, 0, 0, pad), value=float("nan"))
        rows, values = accelerator.gather((rows.contiguous(), values.contiguous()))
    return rows, values[:, 0], values[:, 1]
