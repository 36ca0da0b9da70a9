"""The recipes (`recipes/glue.py`, `recipes/image_classification.py`) offline, in one and two processes.

Every run uses the real offline assets on a tiny budget (tens of rows, 2 epochs): MiniLM on the movie-review
sentences and a tiny ViT on Fashion-MNIST in-process, then each recipe under `accelerate launch` with the
shipped 2-process CPU config (a tiny random BERT with LoRA for the text recipe). Also: the shipped metric
modules against scikit-learn/scipy, the augmentation transform, the accelerate configs, a `.json` argument
file, and that a Hub dataset without network fails at once with a message naming the offline choice.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from launching import accelerate_launch_cmd, run_processes
from offline_data import fashion_mnist_available, sentiment_available

from emp_hf.schedule import StepCounter

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
CONFIGS = RECIPES / "configs"

needs_sentiment = pytest.mark.skipif(not sentiment_available(), reason="sentiment sentences not installed")
needs_fashion = pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST not installed")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"recipes_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


glue = _load("glue")
image_classification = _load("image_classification")
recipe_utils = sys.modules["recipe_utils"]


@pytest.fixture
def offline(monkeypatch):
    """Offline mode however the environment is set (it is read at import time)."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


COMMON = ["--num_train_epochs", "2", "--pruning_method", "emp", "--prune_ratio", "0.5", "--seed", "0"]
COMMON += ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "1"]
TINY_VIT = ["--vit_from_scratch", "--vit_hidden_size", "32", "--vit_num_layers", "1", "--vit_num_heads", "2"]
TINY_VIT += ["--vit_patch_size", "8", "--learning_rate", "1e-3"]
TINY_BERT = ["--train_from_scratch", "--use_lora", "--learning_rate", "1e-3", "--config_overrides"]
TINY_BERT += ["num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64"]


def check_results(output_dir: Path, metric: str, rows: int, batch: int, processes: int) -> dict:
    """all_results.json has the metric, the realised saving and the steps; the histogram picture exists."""
    results = json.loads((output_dir / "all_results.json").read_text())
    assert 0.0 <= results[metric] <= 1.0
    # 2 epochs, 1 warm-up epoch, prune ratio 0.5: plans of N and N/2 rows
    assert results["plan_sizes"] == [rows, rows // 2]
    assert results["realized_saving"] == pytest.approx(0.25)
    assert results["train_realized_saving"] == pytest.approx(0.25)
    counter = StepCounter(batch_size=batch, num_processes=processes)
    assert results["optimizer_steps"] == counter.update_steps(rows) + counter.update_steps(rows // 2)
    assert results["full_data_optimizer_steps"] == 2 * counter.update_steps(rows)
    assert results["wall_clock_seconds"] > 0
    pictures = list(output_dir.glob("*frequency*.png"))
    assert pictures and all(p.stat().st_size > 1000 for p in pictures)
    return results


# ----------------------------------------------------------------------------------------------------------
# One process, in this process
# ----------------------------------------------------------------------------------------------------------


@needs_sentiment
@pytest.mark.slow
def test_glue_offline_minilm(tmp_path, one_thread, offline, capsys):
    out = tmp_path / "glue"
    args = ["--task_name", "sentiment_offline", "--max_train_samples", "48", "--max_eval_samples", "32"]
    args += ["--max_seq_length", "32", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32"]
    result = glue.main([*args, *COMMON, "--output_dir", str(out)])
    check_results(out, "eval_accuracy", rows=48, batch=16, processes=1)
    assert result["eval_accuracy"] == json.loads((out / "all_results.json").read_text())["eval_accuracy"]
    printed = capsys.readouterr().out
    assert "realised saving    25.0%" in printed and "eval_accuracy" in printed
    assert (out / "model.safetensors").exists()  # fine-tuned MiniLM saved like run_glue


@needs_fashion
def test_image_offline_tiny_vit(tmp_path, one_thread, offline):
    out = tmp_path / "image"
    args = ["--dataset_name", "fashion_mnist_offline", "--max_train_samples", "128", "--max_eval_samples", "64"]
    args += ["--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64"]
    result = image_classification.main([*args, *TINY_VIT, *COMMON, "--output_dir", str(out)])
    check_results(out, "eval_accuracy", rows=128, batch=32, processes=1)
    assert result["model_parameters"] < 100_000


# ----------------------------------------------------------------------------------------------------------
# Two processes: accelerate launch with the shipped CPU config
# ----------------------------------------------------------------------------------------------------------


def accelerate_launch(script: str, args: list[str], timeout: float) -> str:
    cmd = accelerate_launch_cmd(RECIPES / script, *args)
    code, out = run_processes(cmd, timeout=timeout, what="accelerate launch")
    assert code == 0, f"accelerate launch failed ({code}):\n{out[-6000:]}"
    return out


@pytest.mark.distributed
@needs_sentiment
def test_glue_two_processes(tmp_path):
    out = tmp_path / "glue2"
    args = ["--task_name", "sentiment_offline", "--max_train_samples", "96", "--max_eval_samples", "64"]
    args += ["--max_seq_length", "32", "--per_device_train_batch_size", "16", *TINY_BERT]
    printed = accelerate_launch("glue.py", [*args, *COMMON, "--output_dir", str(out)], timeout=150)
    assert "2 process(es)" in printed
    check_results(out, "eval_accuracy", rows=96, batch=16, processes=2)
    assert (out / "adapter_model.safetensors").exists()  # LoRA: the adapter is what is saved


@pytest.mark.distributed
@needs_fashion
def test_image_two_processes(tmp_path):
    out = tmp_path / "image2"
    args = ["--dataset_name", "fashion_mnist_offline", "--max_train_samples", "128", "--max_eval_samples", "64"]
    args += ["--per_device_train_batch_size", "16", *TINY_VIT]
    printed = accelerate_launch("image_classification.py", [*args, *COMMON, "--output_dir", str(out)], timeout=150)
    assert "2 process(es)" in printed
    check_results(out, "eval_accuracy", rows=128, batch=16, processes=2)


# ----------------------------------------------------------------------------------------------------------
# Hub datasets without network: fail at once, naming the offline choice
# ----------------------------------------------------------------------------------------------------------


HUB_CASES = [
    (glue, ["--task_name", "sst2", "--model_name_or_path", "bert-base-uncased"], "--task_name sentiment_offline"),
    (glue, ["--task_name", "mnli", "--model_name_or_path", "bert-base-uncased"], "--task_name sentiment_offline"),
    (glue, ["--dataset_name", "stanfordnlp/imdb", "--model_name_or_path", "x"], "--task_name sentiment_offline"),
    (image_classification, ["--dataset_name", "uoft-cs/cifar10", "--vit_from_scratch"], "fashion_mnist_offline"),
    (image_classification, ["--dataset_name", "cifar100", "--vit_from_scratch"], "fashion_mnist_offline"),
]


@pytest.mark.parametrize("recipe, args, hint", HUB_CASES, ids=["sst2", "mnli", "dataset", "cifar10", "cifar100"])
def test_hub_dataset_offline_fails_fast(tmp_path, offline, recipe, args, hint):
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="Hugging Face Hub") as err:
        recipe.main([*args, "--output_dir", str(tmp_path)])
    assert time.perf_counter() - start < 5
    assert hint in str(err.value)


def test_unreachable_hub_fails_fast_without_offline_variable(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: one quick probe fails at once (no 23 s of retries); the variable is
    the user's, read but never set."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(recipe_utils, "_hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="sentiment_offline"):
        glue.main(["--task_name", "rte", "--model_name_or_path", "bert-base-uncased", "--output_dir", str(tmp_path)])
    assert time.perf_counter() - start < 5
    assert not constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE


def test_hub_model_offline_names_the_offline_task(tmp_path, offline):
    with pytest.raises(OSError, match="--task_name sentiment_offline"):
        recipe_utils.from_hub(
            glue.AutoConfig, "some-user/some-model-that-is-not-cached", offline_hint=glue.OFFLINE_HINT
        )


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="sentiment_offline"):
        glue.main(["--task_name", "sst3", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        glue.main(["--task_name", "sst2", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="exactly one"):
        image_classification.main(["--dataset_name", "fashion_mnist_offline", "--output_dir", str(tmp_path)])


# ----------------------------------------------------------------------------------------------------------
# Pieces: metric modules, transform, configs, argument files
# ----------------------------------------------------------------------------------------------------------


def test_glue_metric_module_matches_sklearn_and_scipy():
    import evaluate

    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 2, 200), rng.integers(0, 2, 200)

    def load(config):
        return evaluate.load(str(RECIPES / "metrics" / "glue"), config, keep_in_memory=True)

    mrpc = load("mrpc").compute(predictions=preds, references=refs)
    assert mrpc == pytest.approx({"accuracy": (preds == refs).mean(), "f1": metrics.f1_score(refs, preds)})
    cola = load("cola").compute(predictions=preds, references=refs)
    assert cola["matthews_correlation"] == pytest.approx(metrics.matthews_corrcoef(refs, preds))
    assert load("cola").compute(predictions=[1, 1, 1], references=[0, 1, 1])["matthews_correlation"] == 0.0
    x = rng.normal(size=100).round(1)  # rounded: ties for Spearman
    y = (x + rng.normal(size=100)).round(1)
    stsb = load("stsb").compute(predictions=x, references=y)
    assert stsb["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-6)
    assert stsb["spearmanr"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-6)
    for task in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli"):
        assert load(task).compute(predictions=[0, 1, 2], references=[0, 1, 1]) == {"accuracy": pytest.approx(2 / 3)}
    accuracy = evaluate.load(str(RECIPES / "metrics" / "accuracy"), keep_in_memory=True)
    assert accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 0.75}


def test_metric_modules_have_one_import_per_line():
    """evaluate's import scanner misreads `import a, b`."""
    for path in (RECIPES / "metrics").rglob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("import "):
                assert "," not in line, f"{path}: {line}"


def test_image_transform_augments_the_training_split_only():
    from PIL import Image

    transform = image_classification.ImageTransform
    kwargs = dict(image_column="img", label_column="label", size=(32, 32), mean=[0.5] * 3, std=[0.5] * 3)
    half = np.zeros((40, 40, 3), dtype=np.uint8)
    half[:, :20] = 255  # white left half: a flip moves it right
    batch = {"img": [Image.fromarray(half)] * 64, "label": list(range(64))}

    evaluation = transform(train=False, **kwargs)(batch)
    assert evaluation["pixel_values"].shape == (64, 3, 32, 32) and evaluation["labels"].tolist() == list(range(64))
    assert torch.equal(evaluation["pixel_values"][0], evaluation["pixel_values"][63])  # deterministic
    assert evaluation["pixel_values"][0, :, :, :14].min() > 0.99  # resized white half, normalised to 1

    torch.manual_seed(0)
    train = transform(train=True, crop_padding=4, **kwargs)(batch)["pixel_values"]
    assert train.shape == (64, 3, 32, 32)
    assert train.min() == -1  # zero padding (black) shows in some crops
    left_white = train[:, 0, 16, :8].mean(-1) > 0.5
    right_white = train[:, 0, 16, -8:].mean(-1) > 0.5
    assert left_white.any() and right_white.any()  # some images flipped, some not
    assert not torch.equal(train[0], train[1]) or not torch.equal(train[1], train[2])

    # Offline arrays, normalised with mean = std = 0.5, come back unchanged without augmentation.
    arrays = torch.rand(4, 3, 32, 32) * 2 - 1
    same = transform(train=False, input_normalization=(0.5, 0.5), **{**kwargs, "image_column": "pixel_values"})
    out = same({"pixel_values": arrays.tolist(), "label": [0, 1, 2, 3]})["pixel_values"]
    assert torch.allclose(out, arrays, atol=1e-6)


def test_random_crop_keeps_the_image_under_padding_zero():
    images = torch.rand(5, 3, 8, 8)
    assert torch.equal(image_classification.random_crop(images, 0), images)
    torch.manual_seed(1)
    cropped = image_classification.random_crop(images, 2)
    assert cropped.shape == images.shape


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {
        "single_gpu": ("NO", 1),
        "multi_gpu": ("MULTI_GPU", 8),
        "multi_node": ("MULTI_GPU", 16),
        "fsdp": ("FSDP", 8),
        "deepspeed_zero2": ("DEEPSPEED", 8),
        "cpu_2proc": ("MULTI_GPU", 2),
    }
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes) in expected.items():
        config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
        assert (str(config.distributed_type).split(".")[-1], config.num_processes) == (kind, processes), name
    assert load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config["fsdp_version"] == 2
    assert load_config_from_file(str(CONFIGS / "deepspeed_zero2.yaml")).deepspeed_config["zero_stage"] == 2
    assert load_config_from_file(str(CONFIGS / "multi_node.yaml")).num_machines == 2


def test_json_argument_file(tmp_path):
    path = tmp_path / "args.json"
    config = {
        "task_name": "sentiment_offline",
        "max_train_samples": 100,
        "use_lora": True,
        "output_dir": str(tmp_path / "out"),
        "pruning_method": "ucb",
        "prune_ratio": 0.7,
        "num_train_epochs": 4,
    }
    path.write_text(json.dumps(config))
    model_args, data_args, training_args = glue.parse_args([str(path)])
    assert (data_args.task_name, data_args.max_train_samples, model_args.use_lora) == ("sentiment_offline", 100, True)
    assert (training_args.pruning_method, training_args.prune_ratio) == ("ucb", 0.7)
    path.write_text(json.dumps({"dataset_name": "cifar10", "vit_from_scratch": True, "output_dir": str(tmp_path)}))
    model_args, data_args, _ = image_classification.parse_args([str(path)])
    assert data_args.dataset_name == "uoft-cs/cifar10" and model_args.vit_hidden_size == 192
