"""The threshold rules of planning (issue 24) pick the rows the full sorts picked, and `uniform_subset` is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emp_hf.strategies import base, emp
from emp_hf.strategies.base import kth_largest, rank_descending, top_k, uniform_subset
from emp_hf.strategies.emp import gumbel_top_k


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 256 rows, so a few thousand rows take the sampled-bracket and chunked paths."""
    monkeypatch.setattr(base, "CHUNK_ROWS", 256)
    monkeypatch.setattr(emp, "CHUNK_ROWS", 256)


def reference_gumbel(score: torch.Tensor, k: int, generator: torch.Generator, temperature: float) -> list[int]:
    """Gumbel-top-k as it was: float64 keys in one shot, then a full stable descending sort."""
    uniform = torch.rand(score.numel(), generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16)))
    keys = torch.log(score.double().clamp_min(0.0)) / temperature + gumbel
    keys = torch.where(torch.isnan(score), float("inf"), keys)
    return sorted(rank_descending(keys, generator)[:k].tolist())


def scores(n: int, case: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    score = torch.rand(n, generator=g) * 3
    if case == "nan":  # never observed: tied at +inf, ahead of everything
        score[torch.rand(n, generator=g) < 0.6] = float("nan")
    elif case == "zeros":  # tied at -inf keys
        score[torch.rand(n, generator=g) < 0.7] = 0.0
    elif case == "coarse":  # few distinct values: ties at the threshold
        score = torch.round(score * 2) / 2
    elif case == "sorted":  # not exchangeable: the strided sample still brackets it
        score = score.sort().values
    return score


@pytest.mark.parametrize("case", ["plain", "nan", "zeros", "coarse", "sorted"])
@pytest.mark.parametrize("n", [300, 5000])
def test_threshold_rules_pick_the_rows_of_the_full_sort(case, n, small_chunks):
    score = scores(n, case, seed=n)
    for k in (1, n // 3, n // 2, n - 1):
        for temperature in (1.0, 0.5):
            want = reference_gumbel(score, k, torch.Generator().manual_seed(k), temperature)
            got = gumbel_top_k(score, k, torch.Generator().manual_seed(k), temperature)
            assert got.tolist() == want
        want = sorted(rank_descending(score, torch.Generator().manual_seed(k))[:k].tolist())
        assert top_k(score, k, torch.Generator().manual_seed(k)).tolist() == want


def test_kth_largest_is_the_order_statistic(small_chunks):
    g = torch.Generator().manual_seed(0)
    for keys in (torch.rand(5000, generator=g).double(), torch.arange(5000.0), torch.zeros(5000)):
        for k in (1, 7, 2500, 4999, 5000):
            assert kth_largest(keys, k) == keys.sort(descending=True).values[k - 1]


@pytest.mark.parametrize("pool", ["all", "within"])
def test_uniform_subset_keeps_exactly_k_rows_uniformly(pool, small_chunks):
    n, k, seeds = 40, 15, 4000
    within = None if pool == "all" else torch.arange(n) % 4 != 0  # 30 rows
    size = n if within is None else int(within.sum())
    counts = np.zeros(n)
    for seed in range(seeds):
        mask = uniform_subset(n, k, torch.Generator().manual_seed(seed), within=within)
        assert int(mask.sum()) == k
        counts += mask.numpy()
    if within is not None:
        assert counts[~within.numpy()].sum() == 0
        counts = counts[within.numpy()]
    expected = seeds * k / size
    assert np.sum((counts - expected) ** 2 / expected) < 2.0 * size  # chi2, df = size - 1: about size


@pytest.mark.parametrize("k", [0, 1, 2, 998, 999, 1000])
def test_uniform_subset_meets_every_budget(k, small_chunks):
    for seed in range(5):
        assert int(uniform_subset(1000, k, torch.Generator().manual_seed(seed)).sum()) == k
