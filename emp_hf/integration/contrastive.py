"""EMP for contrastive self-supervised pre-training (NT-Xent / InfoNCE, SimCLR-style).

The memory term of docs/contrastive.md ("The memory term for contrastive learning"): for the `2B` views of a
batch of `B` examples (two augmented views each), anchor `a` has the similarity softmax
`q_a(j) = softmax_j(cos(z_a, z_j) / τ)` over the other `2B − 1` views. Its NT-Xent loss is `−log q_a(positive)`
and its memory term the entropy `H(q_a)`; an example's observation `(ℓ_i, H_i)` is the mean over its two views.
`nt_xent_loss` (the batch mean of `ℓ_i`) is what is trained.

Models plug into `EMPTrainer` through `per_example_loss_func=contrastive_per_example_loss(temperature)`; their
forward must return a mapping (a dict or a `ModelOutput` such as `ContrastiveOutput`) with

- `loss`: the scalar loss to train (normally `nt_xent_loss(z1, z2, temperature)`),
- `z1`, `z2`: the projections of the two views, `[B, D]` each, row `b` of both from the same example.

NT-Xent is computed over the batch each process holds: in a multi-process run the negatives of an anchor are the
other views of its process's micro-batch (no cross-process gather of negatives, unlike SimCLR's global batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

__all__ = [
    "ContrastiveOutput",
    "contrastive_per_example_loss",
    "max_entropy",
    "nt_xent_loss",
    "nt_xent_stats",
]


def _view_stats(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-view NT-Xent loss and softmax entropy, each `[2B]`: views `0..B-1` are `z1`, `B..2B-1` are `z2`."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"z1 and z2 must both be [batch, dim] of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)  # cosine similarity = dot product of unit vectors
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    log_q = F.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=-1)  # over the other 2B-1 views
    positive = torch.arange(2 * batch, device=z.device).roll(batch)  # view a's partner: a + B mod 2B
    loss = -log_q.gather(1, positive[:, None]).squeeze(1)
    log_q = log_q.masked_fill(self_mask, 0.0)  # q = 0 on the diagonal: contributes 0 · 0 to the entropy
    entropy = -(log_q.exp() * log_q).sum(dim=-1)
    return loss, entropy


def nt_xent_stats(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example NT-Xent loss and similarity-softmax entropy (docs/contrastive.md).

    Args:
        z1: projections of the first views, `[B, D]`.
        z2: projections of the second views, `[B, D]`; row `b` is the positive of row `b` of `z1`.
        temperature: τ of the softmax over cosine similarities.

    Returns:
        `(loss, entropy)`, each `[B]` in float32: example `b`'s value is the mean over its two views (as
        anchors) of `−log q_a(positive)` and `H(q_a)`, with `q_a` the softmax over the other `2B − 1` views.
        `loss` keeps the autograd graph; `0 ≤ entropy ≤ log(2B − 1)`.
    """
    loss, entropy = _view_stats(z1, z2, temperature)
    batch = z1.shape[0]
    return (loss[:batch] + loss[batch:]) / 2, (entropy[:batch] + entropy[batch:]) / 2


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The NT-Xent (SimCLR) loss of the batch: the mean over its `2B` anchors, i.e. `nt_xent_stats(...)[0].mean()`."""
    return _view_stats(z1, z2, temperature)[0].mean()


def _field(outputs: Any, name: str) -> torch.Tensor:
    if isinstance(outputs, Mapping) and name in outputs:
        return outputs[name]
    value = getattr(outputs, name, None)
    if value is None:
        raise KeyError(
            f"The contrastive per-example loss needs the model outputs to carry {name!r} (a dict or ModelOutput "
            f"with 'loss', 'z1', 'z2'), got {type(outputs).__name__}"
            + (f" with keys {list(outputs.keys())}" if isinstance(outputs, Mapping) else "")
            + "."
        )
    return value


def contrastive_per_example_loss(
    temperature: float = 0.5,
) -> Callable[[Any, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]:
    """A `per_example_loss_func` for `EMPTrainer` and models whose outputs carry `z1` and `z2`.

    Use the temperature the model trains with. Labels are ignored (self-supervised). The returned loss keeps
    the graph, so the reweighting strategies (`infobatch`, `emp` with `soft`) train on `mean_b(w_b · ℓ_b)`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")

    def per_example_loss(outputs: Any, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return nt_xent_stats(_field(outputs, "z1"), _field(outputs, "z2"), temperature)

    per_example_loss.temperature = temperature  # type: ignore[attr-defined]
    return per_example_loss


@dataclass
class ContrastiveOutput(ModelOutput):
    """Output of a two-view contrastive model: the training loss and the projections of both views."""

    loss: torch.Tensor | None = None
    z1: torch.Tensor | None = None
    z2: torch.Tensor | None = None


def max_entropy(batch_size: int) -> float:
    """The largest possible `H_i` in a batch of `batch_size` examples: `log(2B − 1)`."""
    return math.log(max(2 * batch_size - 1, 1))
