"""The plans of past epochs, stored compactly: a kept-row bitmap per epoch and the seed that regenerates its order.

A plan decided by the planner is the set of kept rows (a bitmap of `ceil(N / 8)` bytes, or nothing when every
row is kept) in an order regenerated from `order_seed` by one of two rules, recorded with the plan:

* `"randperm"` (plans decided on the CPU): the ascending kept rows permuted by
  `torch.randperm(K, generator=torch.Generator().manual_seed(order_seed))`, always drawn on the CPU: one
  Fisher-Yates pass over K rows (torch's CPU `randperm` on its mt19937 generator), three times cheaper than
  the sort of the other rule. A torch whose CPU `randperm` drew other permutations would fail the check of
  the regenerated order below, with an error, never a silently different plan;
* `"mix64"` (plans decided on a GPU, and every plan of emp_hf <= 0.2): row `i` goes where
  `mix64(i * golden + order_seed)` sorts, with `mix64` the SplitMix64 finaliser (a bijection of 64-bit
  integers, so no two rows tie). Integer multiplications, shifts and a sort of distinct keys give the same
  order on every device and torch version.

Either way a plan decided on a GPU is read back on a CPU. Materialising an epoch's plan recomputes that order
and checks its first rows against the ones recorded when it was decided (a guard against an edited history).
Plans recorded with an order chosen elsewhere (`PlanHistory.append_rows`) are stored as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch

#: How many leading rows of each regenerated order are recorded to check the regeneration.
CHECK_ROWS = 16
_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)
# SplitMix64 constants as signed 64-bit integers (torch has no uint64 arithmetic; int64 wraps the same way).
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor of length `N` as `ceil(N / 8)` uint8 bytes, little-endian bit order, on its device."""
    n = mask.numel()
    padded = torch.zeros(-(-n // 8) * 8, dtype=torch.uint8, device=mask.device)
    padded[:n] = mask
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=mask.device)
    return (padded.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(bits: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The inverse of `pack_mask`: a bool tensor of length `num_rows` on the device of `bits`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(1) >> shifts) & 1).view(-1)[:num_rows].bool()


def _available(device_type: str) -> torch.device:
    """`device_type` if this process has one (the same order comes out anywhere), else the CPU."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def plan_dtype(num_rows: int) -> torch.dtype:
    return torch.int32 if num_rows < 2**31 else torch.int64


@dataclass
class PlanEntry:
    """One epoch's plan: `rows` (an explicit order), or `bitmap` (None: every row) shuffled by `order_seed`."""

    size: int
    bitmap: torch.Tensor | None = None
    order_seed: int | None = None  # None: ascending row order
    order_device: str = "cpu"  # the device type the plan was decided on (for the record: the order is portable)
    order_rule: str = "mix64"  # how `order_seed` orders the kept rows (`ORDER_RULES`)
    head: tuple[int, ...] = ()  # the first rows of the order, to check a regeneration
    rows: torch.Tensor | None = None

    def stored_bytes(self) -> int:
        tensor = self.rows if self.rows is not None else self.bitmap
        return 0 if tensor is None else tensor.numel() * tensor.element_size()

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "bitmap": None if self.bitmap is None else self.bitmap.cpu(),
            "order_seed": self.order_seed,
            "order_device": self.order_device,
            "order_rule": self.order_rule,
            "head": list(self.head),
            "rows": None if self.rows is None else self.rows.cpu(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanEntry:
        return cls(
            size=int(d["size"]),
            bitmap=d["bitmap"],
            order_seed=d["order_seed"],
            order_device=d["order_device"],
            order_rule=d.get("order_rule", "mix64"),  # plans saved before the rule was recorded: the hash sort
            head=tuple(int(r) for r in d["head"]),
            rows=d["rows"],
        )


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's `>>` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 tensors (two's-complement wrap-around): a bijection of 64-bit integers."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


#: The rules that order a plan from its kept rows and `order_seed` (see the module docstring).
ORDER_RULES = ("mix64", "randperm")


def order_rule(device_type: str) -> str:
    """The rule that orders a plan decided on `device_type`: a CPU permutation there, a sort of hashes on a GPU."""
    return "randperm" if device_type == "cpu" else "mix64"


def draw_order(kept: torch.Tensor, order_seed: int | None, rule: str = "mix64") -> torch.Tensor:
    """`kept` (row ids) in the order `rule` draws from `order_seed`; as is if `order_seed` is None.

    `"mix64"`: the order of the keys `mix64(row * golden + order_seed)`, distinct (a bijection of distinct rows),
    so the same on every device. `"randperm"`: `kept[torch.randperm(K)]` with a CPU generator seeded by
    `order_seed`, on the CPU whatever the device of `kept` (the result is on the CPU).
    """
    if order_seed is None:
        return kept
    if rule == "randperm":
        kept = kept.to("cpu")
        dtype = torch.int32 if kept.numel() < 2**31 else torch.int64
        generator = torch.Generator().manual_seed(order_seed)
        return kept[torch.randperm(kept.numel(), generator=generator, dtype=dtype)]
    if rule != "mix64":
        raise ValueError(f"Unknown plan order rule {rule!r}; choose from {list(ORDER_RULES)}.")
    seed = (order_seed + 2**63) % 2**64 - 2**63  # as a signed 64-bit integer
    keys = mix64(kept.long() * _GOLDEN + seed)
    return kept[torch.sort(keys).indices]


class PlanHistory(Sequence[torch.Tensor]):
    """Per-epoch plans, read like the list of row tensors it replaces (`history[e]` is epoch e's ordered rows).

    Stores `ceil(N / 8)` bytes per pruned epoch and nothing for an epoch that keeps every row; the two most
    recently read plans are cached on the CPU.
    """

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self.entries: list[PlanEntry] = []
        self._cache: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ recording
    def append_selection(
        self, kept: torch.Tensor | None, order_seed: int | None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Record the next epoch: the rows of `kept` (unique row ids; None: every row), ordered on `device` by the
        keyed hash of `order_seed` (None: ascending). Returns that order (on the CPU)."""
        device = torch.device(device)
        n, dtype, rule = self.num_rows, plan_dtype(self.num_rows), order_rule(device.type)
        if kept is None:
            bitmap, ascending = None, torch.arange(n, device=device, dtype=dtype)
        else:
            kept = kept.to(device)
            mask = torch.zeros(n, dtype=torch.bool, device=device)
            mask.index_fill_(0, kept.long() if kept.dtype != torch.int64 else kept, True)
            if kept.numel() and bool((kept[1:] > kept[:-1]).all()):  # already ascending and unique
                ascending = kept.to(dtype)
            else:
                ascending = torch.nonzero(mask).flatten().to(dtype)
            del kept
            bitmap = None if ascending.numel() == n else pack_mask(mask).cpu()
            del mask
        order = draw_order(ascending, order_seed, rule).to("cpu", dtype)
        entry = PlanEntry(
            size=order.numel(),
            bitmap=bitmap,
            order_seed=order_seed,
            order_device=device.type,
            order_rule=rule,
            head=tuple(order[:CHECK_ROWS].tolist()),
        )
        self._append(entry, order)
        return order

    def append_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Record the next epoch as an explicit ordered list of rows (kept as it is: 4 bytes per row)."""
        order = rows.to("cpu", plan_dtype(self.num_rows))
        self._append(PlanEntry(size=order.numel(), rows=order), order)
        return order

    def _append(self, entry: PlanEntry, order: torch.Tensor) -> None:
        self.entries.append(entry)
        self._remember(len(self.entries) - 1, order)

    def _remember(self, epoch: int, order: torch.Tensor) -> torch.Tensor:
        """Cache `order` as epoch `epoch`'s plan, keeping the two most recently read."""
        self._cache.pop(epoch, None)
        self._cache[epoch] = order
        while len(self._cache) > 2:
            del self._cache[next(iter(self._cache))]
        return order

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        epoch = index + len(self) if index < 0 else index
        if not 0 <= epoch < len(self):
            raise IndexError(f"epoch {index} has no plan ({len(self)} epochs are planned)")
        cached = self._cache.get(epoch)
        return self._remember(epoch, self._materialise(epoch) if cached is None else cached)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[e] for e in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PlanHistory | list | tuple):
            if len(self) != len(other):
                return False
            return all(torch.equal(a.long(), b.long()) for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlanHistory(num_rows={self.num_rows}, sizes={self.sizes})"

    @property
    def sizes(self) -> list[int]:
        return [e.size for e in self.entries]

    def kept(self, epoch: int) -> torch.Tensor:
        """Bool mask `[N]`: whether each row is in the plan of `epoch` (no order is drawn)."""
        entry = self.entries[epoch]
        if entry.rows is not None:
            mask = torch.zeros(self.num_rows, dtype=torch.bool)
            mask[entry.rows.long()] = True
            return mask
        if entry.bitmap is None:
            return torch.ones(self.num_rows, dtype=torch.bool)
        return unpack_mask(entry.bitmap, self.num_rows)

    def stored_bytes(self) -> int:
        return sum(e.stored_bytes() for e in self.entries)

    def _materialise(self, epoch: int) -> torch.Tensor:
        entry = self.entries[epoch]
        if entry.rows is not None:
            return entry.rows
        device = _available(entry.order_device)  # where it was decided if this process has it: a GPU sorts fast
        if entry.bitmap is None:
            ascending = torch.arange(self.num_rows, device=device)
        else:
            ascending = torch.nonzero(unpack_mask(entry.bitmap.to(device), self.num_rows)).flatten()
        order = draw_order(ascending, entry.order_seed, entry.order_rule).to("cpu", plan_dtype(self.num_rows))
        if order.numel() != entry.size or tuple(order[:CHECK_ROWS].tolist()) != entry.head:
            torch_note = (
                f" (or written by a torch whose CPU randperm differs from torch {torch.__version__}'s: resume with "
                "the torch that wrote it)"
                if entry.order_rule == "randperm"
                else ""
            )
            raise RuntimeError(
                f"The plan of epoch {epoch} cannot be regenerated: its bitmap and order seed give other rows than "
                f"the ones recorded when it was decided. The pruning state was edited or corrupted{torch_note}; "
                "resume from another checkpoint."
            )
        return order

    # ------------------------------------------------------------------ (de)serialisation
    def state_dict(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    def load_state_dict(self, entries: list[dict[str, Any]]) -> None:
        """Restore saved plans; an edited or damaged one (rows negative, `>= N` or repeated, a bitmap of the
        wrong length or count) raises a one-line `ValueError`."""
        if not isinstance(entries, list) or not all(isinstance(d, dict) for d in entries):
            raise ValueError(
                f"The plans of the pruning state are {type(entries).__name__}, not a list of plans: the pruning state "
                "was edited or corrupted. Use another checkpoint."
            )
        try:
            loaded = [PlanEntry.from_dict(d) for d in entries]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"A plan of the pruning state is malformed ({type(error).__name__}: {error}): the pruning state was "
                "edited or corrupted. Use another checkpoint."
            ) from None
        for epoch, entry in enumerate(loaded):
            _check_entry(epoch, entry, self.num_rows)
        self.entries, self._cache = loaded, {}

    def load_rows(self, plans: list[torch.Tensor]) -> None:
        """Replace the history by explicit ordered plans (format_version 1 checkpoints), checked as in
        `load_state_dict`."""
        self.entries, self._cache = [], {}
        for plan in plans:
            if not isinstance(plan, torch.Tensor):
                raise ValueError(f"A plan of the pruning state is a {type(plan).__name__}, not a tensor of rows.")
            self.append_rows(plan)
            _check_entry(len(self.entries) - 1, self.entries[-1], self.num_rows)
        self._cache = {}


def _check_entry(epoch: int, entry: PlanEntry, num_rows: int) -> None:
    """Raise a one-line `ValueError` if `entry` cannot be a plan of `num_rows` rows."""
    problem = None
    if not 0 <= entry.size <= num_rows:
        problem = f"its size is {entry.size}, for {num_rows} rows"
    elif entry.rows is not None:
        rows = entry.rows
        if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype.is_floating_point or rows.is_complex():
            problem = "its rows are not a 1-D tensor of row indices"
        elif rows.numel() != entry.size:
            problem = f"it holds {rows.numel()} rows, its size says {entry.size}"
        elif rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_rows):
            bad = rows[(rows < 0) | (rows >= num_rows)][0]
            problem = f"it holds row {int(bad)}, outside 0..{num_rows - 1}"
        elif torch.unique(rows).numel() != rows.numel():
            problem = "it holds a row more than once"
    elif entry.bitmap is not None:
        bitmap, nbytes = entry.bitmap, (num_rows + 7) // 8
        if not isinstance(bitmap, torch.Tensor) or bitmap.dtype != torch.uint8 or bitmap.shape != (nbytes,):
            problem = f"its bitmap is not {nbytes} bytes"
        elif (kept := int(unpack_mask(bitmap, num_rows).sum())) != entry.size:
            problem = f"its bitmap keeps {kept} rows, its size says {entry.size}"
    elif entry.size != num_rows:
        problem = f"it keeps every row but its size says {entry.size}"
    if problem is None and entry.order_rule not in ORDER_RULES:
        problem = f"its order rule {entry.order_rule!r} is none of {list(ORDER_RULES)}"
    if problem is None and any(not 0 <= r < num_rows for r in entry.head):
        problem = "the rows recorded to check its order are outside the dataset"
    if problem is not None:
        raise ValueError(
            f"The plan of epoch {epoch} in the pruning state is invalid: {problem}. The pruning state was edited or "
            "corrupted; use another checkpoint."
        )
