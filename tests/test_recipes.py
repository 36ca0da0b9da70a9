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

from emp_hf.core.schedule import StepCounter
from emp_hf_dev import recipe_runtime
from emp_hf_dev.launching import accelerate_launch_cmd, run_processes
from emp_hf_dev.offline_data import fashion_mnist_available, sentiment_available

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
    monkeypatch.setattr(recipe_runtime, "_hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="sentiment_offline"):
        glue.main(["--task_name", "rte", "--model_name_or_path", "bert-base-uncased", "--output_dir", str(tmp_path)])
    assert time.perf_counter() - start < 5
    assert not constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE


def test_hub_model_offline_names_the_offline_task(tmp_path, offline):
    with pytest.raises(OSError, match="--task_name sentiment_offline"):
        recipe_runtime.from_hub(
            glue.AutoConfig, "some-user/some-model-that-is-not-cached", offline_hint=glue.OFFLINE_HINT
        )


def test_bad_arguments_fail_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # refused while parsing: one argparse-style line
        glue.main(["--task_name", "sst3", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "error: Unknown task 'sst3'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        glue.main(["--task_name", "sst2", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        image_classification.main(["--dataset_name", "fashion_mnist_offline", "--output_dir", str(tmp_path)])
    assert "exactly one" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# A config mistake on the command line: one `error:` line, exit status 2, in every recipe
# ----------------------------------------------------------------------------------------------------------

CONFIG_MISTAKES = [
    (["--pruning_method", "emp_"], "pruning_method='emp_' is invalid: choose one of"),
    (["--prune_ratio", "1.5"], "prune_ratio=1.5 is invalid: it must be a number in [0, 1)"),
    (["--threads", "0"], "--threads 0 is invalid"),
]


@pytest.mark.parametrize("recipe", ["glue", "image_classification", "contrastive", "sft", "demo"])
@pytest.mark.parametrize(("flags", "message"), CONFIG_MISTAKES)
def test_a_config_mistake_is_one_error_line(tmp_path, capsys, recipe, flags, message):
    module = {"glue": glue, "image_classification": image_classification}.get(recipe) or _load(recipe)
    data = {
        "glue": ["--task_name", "sentiment_offline"],
        "image_classification": ["--dataset_name", "cifar10", "--vit_from_scratch"],
    }
    with pytest.raises(SystemExit) as exit_info:
        module.main([*data.get(recipe, []), "--output_dir", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("  ", "/"))]
    errors = [line for line in errors if "Warning" not in line]  # a deprecation warning of the libraries
    assert len(errors) == 1 and errors[0].startswith(f"{Path(sys.argv[0]).name}: error: ")
    assert message in errors[0] and "Traceback" not in errors[0]


def test_a_config_mistake_from_the_shell_exits_2_with_one_line(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, str(RECIPES / "demo.py"), "--output_dir", str(tmp_path), "--pruning_method", "emp_"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    from emp_hf import STRATEGIES

    assert done.stderr.strip().splitlines() == [
        f"demo.py: error: EMPConfig.pruning_method='emp_' is invalid: choose one of {sorted(STRATEGIES)}."
    ]


# ----------------------------------------------------------------------------------------------------------
# The README's SFT command on a CPU: bf16 only where the hardware has it
# ----------------------------------------------------------------------------------------------------------


def test_the_sft_recipe_asks_for_bf16_only_where_the_hardware_has_it(tmp_path, capsys):
    from transformers.utils import is_torch_bf16_gpu_available

    sft = _load("sft")
    readme = ["--dataset_name", "sentiment_offline", "--pruning_method", "emp", "--prune_ratio", "0.5"]
    _, training_args, _ = sft.parse_args([*readme, "--output_dir", str(tmp_path)])
    assert training_args.bf16 == is_torch_bf16_gpu_available()
    if not is_torch_bf16_gpu_available():  # asked for on a CPU: transformers' refusal, as one line
        with pytest.raises(SystemExit):
            sft.parse_args([*readme, "--output_dir", str(tmp_path), "--bf16", "true"])
        assert "error: Your setup doesn't support bf16/gpu" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# torch's threads: the cores other jobs leave free
# ----------------------------------------------------------------------------------------------------------


def test_one_thread_per_core_that_other_jobs_leave_free():
    threads_for = recipe_runtime.threads_for
    assert [threads_for(free, 2) for free in (2.0, 1.8, 1.6, 1.0, 0.3, -6.0)] == [2, 2, 1, 1, 1, 1]
    assert threads_for(15.9, 8) == 8  # never more than torch's own default


class FakeStat:
    """`/proc/stat` and this process's CPU time, as the test says: (busy ticks, all ticks, own CPU seconds)."""

    def __init__(self, samples):
        self.samples = iter(samples)

    def __call__(self):
        return next(self.samples)


def test_the_core_meter_takes_this_process_own_cpu_time_off(monkeypatch):
    tick = __import__("os").sysconf("SC_CLK_TCK")
    meter = recipe_runtime.CoreMeter.__new__(recipe_runtime.CoreMeter)
    meter.cpus = [0, 1]
    # 1 s on 2 cores: 2 * tick ticks in all. Busy 1.5 cores, of which this process's threads 1.0 core.
    meter._sample = FakeStat([(0, 0, 0.0), (1.5 * tick, 2 * tick, 1.0), (3.5 * tick, 4 * tick, 1.0)])
    meter._last = meter._sample()
    assert meter.others_busy() == pytest.approx(0.5)
    assert meter.others_busy() == pytest.approx(2.0)  # the next second: others on both cores, this one idle


def _busy_loops(n: int, seconds: float):
    import subprocess

    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat (Linux)")
def test_busy_processes_on_every_core_leave_torch_one_thread(capsys):
    cores = recipe_runtime.usable_cores()
    if cores > 4:
        pytest.skip("the test keeps every core busy; too many here")
    threads = torch.get_num_threads()
    loops = _busy_loops(cores, 3.0)
    try:
        time.sleep(1.0)  # the loops started
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("OMP_NUM_THREADS", raising=False)
            patch.setattr(recipe_runtime, "_TORCH_DEFAULT_THREADS", torch.get_num_threads())
            chosen = recipe_runtime.set_torch_threads()
        assert chosen.meter is not None and chosen.threads == 1 == torch.get_num_threads()
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"torch threads: 1 ({cores} cores, other jobs use ") and "OMP_NUM_THREADS" in line
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        torch.set_num_threads(threads)


def test_the_thread_count_follows_the_free_cores_while_training(monkeypatch):
    monkeypatch.setattr(recipe_runtime, "THREAD_CHECK_INTERVAL", 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(recipe_runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(recipe_runtime, "_TORCH_DEFAULT_THREADS", torch.get_num_threads())
    busy = iter([0.0, 1.2, 0.1, None])
    monkeypatch.setattr(recipe_runtime.CoreMeter, "others_busy", lambda self: next(busy))
    monkeypatch.setattr(recipe_runtime.time, "sleep", lambda seconds: None)
    threads = torch.get_num_threads()
    try:
        follower = recipe_runtime.TorchThreads()
        limit = min(2, threads)
        seen = [follower.threads]
        for _ in range(3):
            follower.on_step_begin(None, None, None)
            seen.append(torch.get_num_threads())
        assert seen == [limit, 1, limit, limit]  # another job took a core, gave it back; no reading: unchanged
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("how", ["flag", "environment", "torch.set_num_threads"])
def test_a_thread_count_the_user_chose_is_kept_and_said(tmp_path, monkeypatch, capsys, how):
    threads = torch.get_num_threads()
    monkeypatch.setattr(recipe_runtime, "_TORCH_DEFAULT_THREADS", threads + 1)  # as if torch's default were another
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv = ["--task_name", "sentiment_offline", "--output_dir", str(tmp_path)]
    try:
        if how == "flag":
            glue.parse_args([*argv, "--threads", "1"])
            expected = "torch threads: 1 (--threads 1)"
        elif how == "environment":
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            torch.set_num_threads(1)
            glue.parse_args(argv)
            expected = "torch threads: 1 (OMP_NUM_THREADS=1)"
        else:
            torch.set_num_threads(1)
            glue.parse_args(argv)
            expected = "torch threads: 1 (set in this process by torch.set_num_threads)"
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().out.strip() == expected
        assert recipe_runtime._torch_threads.meter is None  # fixed: nothing follows the load
    finally:
        torch.set_num_threads(threads)


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
