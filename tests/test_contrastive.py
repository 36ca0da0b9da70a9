"""Contrastive EMP (docs/contrastive.md): NT-Xent statistics against a numpy reference, EMPTrainer with a two-view
model for every method, the recipe's augmentation, and the recipe offline end to end (and under 2 processes)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch import nn

from emp_hf import EMPTrainer
from emp_hf.integration.contrastive import (
    ContrastiveOutput,
    contrastive_per_example_loss,
    max_entropy,
    nt_xent_loss,
    nt_xent_stats,
)
from emp_hf_dev import recipe_runtime
from emp_hf_dev.fixtures import make_args
from emp_hf_dev.launching import accelerate_launch_cmd, run_processes
from emp_hf_dev.offline_data import fashion_mnist_available

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "contrastive.py"
needs_fashion = pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipes_contrastive", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


recipe = _load_recipe()


def reference_stats(z1: np.ndarray, z2: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """NT-Xent per example, written out with loops in float64: anchor by anchor, view by view."""
    b = len(z1)
    views = np.concatenate([z1, z2]).astype(np.float64)
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    losses, entropies = np.zeros(2 * b), np.zeros(2 * b)
    for a in range(2 * b):
        others = [j for j in range(2 * b) if j != a]
        sims = np.array([views[a] @ views[j] / tau for j in others])
        q = np.exp(sims - sims.max())
        q /= q.sum()
        positive = others.index((a + b) % (2 * b))
        losses[a] = -math.log(q[positive])
        entropies[a] = -sum(p * math.log(p) for p in q if p > 0)
    return (losses[:b] + losses[b:]) / 2, (entropies[:b] + entropies[b:]) / 2


# ----------------------------------------------------------------------------------------------------------
# nt_xent_stats
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "dim", "tau"), [(1, 3, 0.5), (2, 4, 0.1), (5, 7, 0.5), (16, 8, 1.0)])
def test_nt_xent_stats_matches_numpy_reference(batch, dim, tau):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1, z2 = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g) * 3  # scale is irrelevant
    loss, entropy = nt_xent_stats(z1, z2, tau)
    ref_loss, ref_entropy = reference_stats(z1.numpy(), z2.numpy(), tau)
    assert loss.shape == entropy.shape == (batch,)
    assert loss.dtype == entropy.dtype == torch.float32
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy.numpy(), ref_entropy, rtol=1e-5, atol=1e-5)


def test_nt_xent_is_symmetric_in_the_two_views():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for a, b in zip(nt_xent_stats(z1, z2), nt_xent_stats(z2, z1), strict=True):
        torch.testing.assert_close(a, b)


def test_identical_views_give_low_loss():
    batch = 8
    z = torch.eye(16)[:batch] * 5  # orthogonal examples, each view identical to its partner
    loss, entropy = nt_xent_stats(z, z.clone(), temperature=0.1)
    assert loss.max() < 1e-2  # -log(e^10 / (e^10 + 14)) ≈ 6e-4
    assert entropy.max() < 0.05
    g = torch.Generator().manual_seed(0)
    random_loss, _ = nt_xent_stats(torch.randn(batch, 16, generator=g), torch.randn(batch, 16, generator=g), 0.1)
    assert random_loss.min() > 10 * loss.max()


def test_entropy_is_bounded_by_log_of_the_other_views():
    g = torch.Generator().manual_seed(1)
    for batch in (1, 2, 7, 32):
        for tau in (0.05, 0.5, 5.0):
            z1, z2 = torch.randn(batch, 4, generator=g), torch.randn(batch, 4, generator=g)
            loss, entropy = nt_xent_stats(z1, z2, tau)
            assert (entropy >= -1e-6).all() and (entropy <= math.log(2 * batch - 1) + 1e-5).all()
            assert (loss >= -1e-6).all()
    # all views alike: the softmax is uniform over the 2B-1 others, loss = entropy = log(2B-1)
    loss, entropy = nt_xent_stats(torch.ones(4, 3), torch.ones(4, 3))
    torch.testing.assert_close(entropy, torch.full((4,), max_entropy(4)))
    torch.testing.assert_close(loss, torch.full((4,), max_entropy(4)))


def test_batch_mean_is_nt_xent_loss_with_the_same_gradient():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(10, 6, generator=g, requires_grad=True)
    z2 = torch.randn(10, 6, generator=g, requires_grad=True)
    per_example, _ = nt_xent_stats(z1, z2, 0.3)
    mean = per_example.mean()
    loss = nt_xent_loss(z1, z2, 0.3)
    torch.testing.assert_close(mean, loss)
    grads_mean = torch.autograd.grad(mean, (z1, z2))
    grads_loss = torch.autograd.grad(loss, (z1, z2))
    for a, b in zip(grads_mean, grads_loss, strict=True):
        torch.testing.assert_close(a, b)


def test_half_precision_inputs_give_float32_stats():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    loss, entropy = nt_xent_stats(z1.bfloat16(), z2.bfloat16())
    assert loss.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent_stats(z1, z2)[0], atol=0.05, rtol=0.05)


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_stats(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_stats(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_per_example_loss(-1.0)


def test_per_example_loss_func_reads_dicts_and_model_outputs():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    fn = contrastive_per_example_loss(0.2)
    expected = nt_xent_stats(z1, z2, 0.2)
    for outputs in ({"loss": torch.tensor(0.0), "z1": z1, "z2": z2}, ContrastiveOutput(loss=None, z1=z1, z2=z2)):
        for got, want in zip(fn(outputs, None), expected, strict=True):
            torch.testing.assert_close(got, want)
    with pytest.raises(KeyError, match="'z2'"):
        fn({"loss": torch.tensor(0.0), "z1": z1}, None)


# ----------------------------------------------------------------------------------------------------------
# EMPTrainer with a tiny two-view model
# ----------------------------------------------------------------------------------------------------------

ROWS, SIDE = 48, 8


def tiny_model(seed: int = 0) -> recipe.SimCLRModel:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 16), nn.ReLU())
    return recipe.SimCLRModel(encoder, feature_dim=16, projection_dim=8, temperature=0.5)


def noisy_views(batch: dict[str, list]) -> dict[str, torch.Tensor]:
    """Two views of each image: the image plus independent noise."""
    x = torch.as_tensor(np.asarray(batch["pixel_values"], dtype=np.float32))
    return {"pixel_values": torch.stack([x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)], dim=1)}


def two_view_dataset() -> datasets.Dataset:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(ROWS, 3, SIDE, SIDE, generator=g)
    return datasets.Dataset.from_dict({"pixel_values": pixels.tolist()}).with_transform(noisy_views)


CASES = [
    ("emp", {}),
    ("emp", {"emp_selection": "soft"}),
    ("random", {}),
    ("infobatch", {}),
    ("infobatch", {"infobatch_match_budget": True}),
    ("ucb", {}),
    ("epsilon_greedy", {}),
    ("none", {"prune_ratio": None}),
]


@pytest.mark.parametrize(("method", "extra"), CASES, ids=[f"{m}{'-' + '-'.join(e) if e else ''}" for m, e in CASES])
def test_empt_trainer_trains_a_contrastive_model(tmp_path, method, extra):
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    args = make_args(tmp_path, pruning_method=method, num_train_epochs=4, per_device_train_batch_size=8, **extra)
    trainer = EMPTrainer(
        model=model,
        args=args,
        train_dataset=two_view_dataset(),
        per_example_loss_func=contrastive_per_example_loss(0.5),
    )
    output = trainer.train()
    state = trainer.pruning_state
    sizes = state.epoch_plan_sizes
    assert len(sizes) == 4 and sizes[0] == ROWS
    assert int(state.frequency.sum()) == sum(sizes)  # every planned row visited exactly once per plan
    assert int(state.frequency.min()) >= 1
    assert math.isfinite(output.training_loss)
    assert output.metrics["train_realized_saving"] == pytest.approx(state.realized_saving())
    if method not in ("none", "infobatch"):
        assert state.realized_saving() == pytest.approx(1 - (ROWS + 3 * ROWS // 2) / (4 * ROWS))
    # the observations are NT-Xent statistics of batches of at most 8 examples
    assert torch.isfinite(state.loss).all() and torch.isfinite(state.entropy).all()
    assert (state.entropy > 0).all() and (state.entropy <= max_entropy(8) + 1e-5).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_reweighting_trains_on_the_weighted_per_example_loss(tmp_path):
    """InfoBatch/soft: the trained loss is mean_b(w_b * l_b), which needs the per-example loss's graph."""
    args = make_args(
        tmp_path,
        pruning_method="infobatch",
        num_train_epochs=3,
        per_device_train_batch_size=8,
        pruning_anneal_fraction=0,
    )
    trainer = EMPTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=two_view_dataset(),
        per_example_loss_func=contrastive_per_example_loss(0.5),
    )
    trainer.train()
    weights = trainer.pruning_state.tables["weight"]
    assert (weights > 1).any()  # kept below-mean rows were upweighted in the pruned epoch


# ----------------------------------------------------------------------------------------------------------
# Recipe
# ----------------------------------------------------------------------------------------------------------


def test_random_views_shape_range_and_flip():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(6, 3, 28, 28, generator=g) * 2 - 1
    data_args = recipe.DataArguments(image_size=32)
    views = recipe.random_views(images, data_args)
    assert views.shape == (6, 3, 32, 32)
    assert views.min() >= -1 and views.max() <= 1
    plain = recipe.DataArguments(image_size=28, crop="pad", crop_padding=0, brightness=0.0, contrast=0.0)
    plain.flip_prob = 1.0
    torch.testing.assert_close(recipe.random_views(images, plain), images.flip(-1), atol=1e-5, rtol=0)
    plain.flip_prob = 0.0
    torch.testing.assert_close(recipe.random_views(images, plain), images, atol=1e-5, rtol=0)
    shifted = recipe.DataArguments(image_size=28, crop="pad", crop_padding=3, flip_prob=0.0, brightness=0.0)
    shifted.contrast = 0.0
    out = recipe.random_views(images, shifted)
    assert out.shape == images.shape and out.min() >= -1


def test_two_views_transform_on_fashion_like_rows():
    rows = datasets.Dataset.from_dict({"pixel_values": (torch.rand(4, 3, 28, 28) * 2 - 1).tolist(), "label": [0] * 4})
    ds = rows.with_transform(recipe.TwoViews("pixel_values", recipe.DataArguments(image_size=28)))
    item = ds[0]
    assert set(item) == {"pixel_values"} and item["pixel_values"].shape == (2, 3, 28, 28)
    assert not torch.equal(item["pixel_values"][0], item["pixel_values"][1])
    small = recipe.image_loader("pixel_values", 24)(rows[:2])  # the probe sees the training size too
    assert small.shape == (2, 3, 24, 24)


TINY = ["--max_train_samples", "256", "--max_eval_samples", "256", "--num_train_epochs", "2"]
TINY += ["--per_device_train_batch_size", "64", "--cnn_width", "8", "--prune_ratio", "0.5", "--seed", "0"]
TINY += ["--disable_tqdm", "true", "--logging_steps", "1", "--use_cpu", "true"]


@needs_fashion
@pytest.mark.parametrize("method", ["emp", "infobatch"])
def test_recipe_offline_end_to_end(tmp_path, one_thread, method, capsys):
    extra = ["--pruning_anneal_fraction", "0"] if method == "infobatch" else []  # 2 epochs: no room to anneal
    start = time.perf_counter()
    results = recipe.main([*TINY, *extra, "--pruning_method", method, "--output_dir", str(tmp_path)])
    assert time.perf_counter() - start < 60
    saved = json.loads((tmp_path / "all_results.json").read_text())
    for key in ("probe_accuracy", "realized_saving", "optimizer_steps", "wall_clock_seconds"):
        assert key in saved and key in results
    assert 0.1 < saved["probe_accuracy"] <= 1.0  # 10 classes: a frozen random CNN is already well above chance
    assert saved["plan_sizes"][0] == 256 and len(saved["plan_sizes"]) == 2
    if method == "emp":
        assert saved["plan_sizes"] == [256, 128] and saved["realized_saving"] == pytest.approx(0.25)
        assert saved["optimizer_steps"] == 4 + 2 and saved["full_data_optimizer_steps"] == 4 + 4
    assert "probe accuracy" in capsys.readouterr().out


def test_recipe_on_a_hub_style_dataset_of_pil_images(tmp_path, one_thread, monkeypatch):
    """The Hub path (CIFAR-like `img`/`label` columns of PIL images), with `load_dataset` served locally."""
    from PIL import Image

    g = np.random.default_rng(0)

    def split(n: int) -> datasets.Dataset:
        images = [Image.fromarray(g.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(n)]
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
        return datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]}, features=features)

    local = datasets.DatasetDict({"train": split(64), "test": split(32)})
    monkeypatch.setattr(recipe_runtime, "load_dataset", lambda *args, **kwargs: local)
    args = ["--dataset_name", "cifar10", "--image_size", "16", "--max_train_samples", "48", "--num_train_epochs", "2"]
    args += ["--per_device_train_batch_size", "16", "--cnn_width", "4", "--disable_tqdm", "true", "--use_cpu", "true"]
    args += ["--pruning_method", "random", "--prune_ratio", "0.5", "--encoder", "vit", "--vit_hidden_size", "16"]
    args += ["--vit_num_layers", "1", "--vit_num_heads", "2", "--output_dir", str(tmp_path)]
    results = recipe.main(args)
    assert results["plan_sizes"] == [48, 24] and results["probe_test_samples"] == 32
    assert 0.0 <= results["probe_accuracy"] <= 1.0
    image = local["train"][0]["img"]
    x = recipe.image_loader("img", 16)({"img": [image, image]})
    assert x.shape == (2, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_recipe_hub_dataset_offline_fails_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="Hugging Face Hub") as err:
        recipe.main(["--dataset_name", "uoft-cs/cifar10", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert time.perf_counter() - start < 5
    assert "--dataset_name fashion_mnist_offline" in str(err.value)


def test_recipe_json_arguments_keep_the_recipe_defaults(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "pruning_method": "random", "temperature": 0.2}))
    model_args, data_args, training_args = recipe.parse_args([str(path)])
    assert model_args.temperature == 0.2 and data_args.dataset_name == "fashion_mnist_offline"
    assert training_args.pruning_method == "random" and training_args.learning_rate == 1e-3
    assert training_args.remove_unused_columns is False
    _, _, overridden = recipe.parse_args(["--output_dir", str(tmp_path), "--learning_rate", "0.01"])
    assert overridden.learning_rate == 0.01 and overridden.per_device_train_batch_size == 256


@pytest.mark.distributed
@needs_fashion
def test_recipe_two_processes(tmp_path):
    config = ROOT / "recipes" / "configs" / "cpu_2proc.yaml"
    if not config.exists():
        pytest.skip("recipes/configs/cpu_2proc.yaml is missing")
    cmd = accelerate_launch_cmd(RECIPE, *TINY, "--output_dir", str(tmp_path))
    code, out = run_processes(cmd, timeout=180, what="accelerate launch")
    assert code == 0, out[-6000:]
    assert "2 process(es)" in out
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert saved["plan_sizes"] == [256, 128]
    # 64 rows per process and batch: 2 steps for 256 rows, 1 for 128
    assert saved["optimizer_steps"] == 3 and 0.1 < saved["probe_accuracy"] <= 1.0
