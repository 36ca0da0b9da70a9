"""Tests of `emp_hf_dev.offline_data`: the real files installed by `make setup`, and small synthetic copies."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from emp_hf_dev import offline_data as od

needs_sentiment = pytest.mark.skipif(not od.sentiment_available(), reason="VADER sentences not installed (make setup)")
needs_fashion_mnist = pytest.mark.skipif(
    not od.fashion_mnist_available(), reason="Fashion-MNIST not installed (make setup)"
)


# ---- synthetic files ------------------------------------------------------------------------------------


def _write_sentiment(path: Path, rows: list[tuple[int, str, str]], bom: bool = False) -> Path:
    text = "\r\n".join(f"{i}\t{rating}\t{sentence}" for i, rating, sentence in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fashion_mnist(directory: Path, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[split], arrays[f"{split}_labels"] = images, labels
    return arrays


# ---- sentiment: synthetic -------------------------------------------------------------------------------


def test_sentiment_parses_crlf_bom_utf8_and_drops_zero(tmp_path: Path) -> None:
    rows = [
        (1, "2.26666666667", "The Rock is destined to be the 21st Century's new ''Conan''"),
        (2, "-0.6", "Effective but too tepid biopic"),
        (3, "0", "Neither here nor there"),
        (4, "1.5", "Jirí Hubac's script is a gem \u2013 really"),
        (5, "-3.2", "Dull."),
        (6, "0.1", "Mildly fine"),
    ]
    _write_sentiment(tmp_path / od.SENTIMENT_SUBDIR / od.SENTIMENT_FILE, rows, bom=True)
    data = od.load_sentiment_sentences(tmp_path, test_size=2, seed=0)
    assert set(data) == {"train", "test"}
    assert (data["train"].num_rows, data["test"].num_rows) == (3, 2)
    merged = {s: y for split in data.values() for s, y in zip(split["sentence"], split["label"], strict=True)}
    assert merged == {
        "The Rock is destined to be the 21st Century's new ''Conan''": 1,
        "Effective but too tepid biopic": 0,
        "Jirí Hubac's script is a gem \u2013 really": 1,
        "Dull.": 0,
        "Mildly fine": 1,
    }


def test_sentiment_accepts_flat_dir_and_file_path(tmp_path: Path) -> None:
    path = _write_sentiment(tmp_path / od.SENTIMENT_FILE, [(1, "1", "good"), (2, "-1", "bad")] * 3)
    assert od.sentiment_available(tmp_path) and od.sentiment_available(path)
    assert sum(ds.num_rows for ds in od.load_sentiment_sentences(path, test_size=2).values()) == 6


def test_sentiment_uses_emp_hf_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMP_HF_DATA", str(tmp_path))
    assert od.data_home() == tmp_path
    assert not od.sentiment_available()
    _write_sentiment(tmp_path / od.SENTIMENT_SUBDIR / od.SENTIMENT_FILE, [(1, "1", "a"), (2, "-1", "b")] * 2)
    assert od.sentiment_available()
    assert od.load_sentiment_sentences(test_size=2)["test"].num_rows == 2


def test_sentiment_missing_file_says_make_setup(tmp_path: Path) -> None:
    assert not od.sentiment_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="make setup"):
        od.load_sentiment_sentences(tmp_path)


def test_sentiment_malformed_line(tmp_path: Path) -> None:
    (tmp_path / od.SENTIMENT_FILE).write_text("1\t1.0\tfine\r\n2\tbroken line\r\n")
    with pytest.raises(ValueError, match=":2: expected 3 tab-separated fields"):
        od.load_sentiment_sentences(tmp_path)


# ---- sentiment: the real file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment() -> DatasetDict:
    return od.load_sentiment_sentences()


@needs_sentiment
def test_real_sentiment_counts_and_features(sentiment: DatasetDict) -> None:
    train, test = sentiment["train"], sentiment["test"]
    assert (train.num_rows, test.num_rows) == (8454, 2114)
    labels = np.array(list(train["label"]) + list(test["label"]))
    assert (labels == 1).sum() == 5242 and (labels == 0).sum() == 5326
    assert abs(np.mean(list(test["label"])) - 5242 / 10568) < 0.002  # stratified
    assert train.features["label"].names == ["negative", "positive"]
    assert train.features["sentence"].dtype == "string"
    sentences = list(train["sentence"]) + list(test["sentence"])
    assert all(s and "\r" not in s and "\n" not in s and "\t" not in s for s in sentences)
    text = "".join(sentences)
    assert "é" in text and "\u2013" in text  # UTF-8 decoded, not mojibake
    assert "Ã" not in text and "\ufffd" not in text


@needs_sentiment
def test_real_sentiment_split_is_deterministic(sentiment: DatasetDict) -> None:
    again = od.load_sentiment_sentences()
    assert list(again["test"]["sentence"]) == list(sentiment["test"]["sentence"])
    other = od.load_sentiment_sentences(seed=1)
    assert list(other["test"]["sentence"]) != list(sentiment["test"]["sentence"])
    assert od.load_sentiment_sentences(test_size=0.5)["test"].num_rows == 5284


# ---- Fashion-MNIST: synthetic ---------------------------------------------------------------------------


def test_fashion_mnist_pads_repeats_and_normalises(tmp_path: Path) -> None:
    arrays = _write_fashion_mnist(tmp_path)
    data = od.load_fashion_mnist(tmp_path)
    assert (data["train"].num_rows, data["test"].num_rows) == (5, 3)
    assert data["train"].features["label"].names == od.FASHION_MNIST_CLASSES
    batch = data["train"].with_format("torch")[:]
    pixels, labels = batch["pixel_values"], batch["label"]
    assert pixels.shape == (5, 3, 32, 32) and pixels.dtype == torch.float32
    assert labels.tolist() == arrays["train_labels"].tolist()
    expected = torch.full((5, 32, 32), -1.0)
    expected[:, 2:30, 2:30] = (torch.from_numpy(arrays["train"]).float() / 255 - 0.5) / 0.5
    for channel in range(3):
        torch.testing.assert_close(pixels[:, channel], expected)
    test_pixels = data["test"].with_format("numpy")[:]["pixel_values"]
    assert test_pixels.shape == (3, 3, 32, 32) and test_pixels.dtype == np.float32


def test_fashion_mnist_limits_and_sizes(tmp_path: Path) -> None:
    arrays = _write_fashion_mnist(tmp_path / od.FASHION_MNIST_SUBDIR)  # found in the subfolder too
    data = od.load_fashion_mnist(tmp_path, image_size=28, max_train=2, max_test=10)
    assert (data["train"].num_rows, data["test"].num_rows) == (2, 3)
    first = data["train"].with_format("numpy")[0]["pixel_values"]
    assert first.shape == (3, 28, 28)
    np.testing.assert_allclose(first[1], arrays["train"][0] / 127.5 - 1, atol=1e-6)
    odd = od.load_fashion_mnist(tmp_path, image_size=33, max_train=1, max_test=0)
    assert odd["test"].num_rows == 0
    assert odd["train"].with_format("numpy")[0]["pixel_values"].shape == (3, 33, 33)
    with pytest.raises(ValueError, match="at least 28"):
        od.load_fashion_mnist(tmp_path, image_size=27)


def test_fashion_mnist_rejects_bad_files(tmp_path: Path) -> None:
    _write_fashion_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5), magic=0x0803)
    with pytest.raises(ValueError, match="magic"):
        od.load_fashion_mnist(tmp_path)
    _write_fashion_mnist(tmp_path)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x0803, 3, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        od.load_fashion_mnist(tmp_path)


def test_fashion_mnist_missing_files_say_make_setup(tmp_path: Path) -> None:
    assert not od.fashion_mnist_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="make setup"):
        od.load_fashion_mnist(tmp_path)


# ---- Fashion-MNIST: the real files ----------------------------------------------------------------------


@needs_fashion_mnist
def test_real_fashion_mnist_small() -> None:
    data = od.load_fashion_mnist(max_train=256, max_test=64)
    assert (data["train"].num_rows, data["test"].num_rows) == (256, 64)
    batch = data["train"].with_format("torch")[:8]
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert batch["label"].tolist() == [9, 0, 0, 3, 0, 2, 7, 2]  # the first training labels
    assert data["train"].features["label"].int2str(9) == "Ankle boot"
    pixels = batch["pixel_values"]
    assert pixels.min() == -1.0 and pixels.max() <= 1.0
    assert (pixels[:, :, :2] == -1).all() and (pixels[:, :, -2:] == -1).all()  # padding


@needs_fashion_mnist
@pytest.mark.slow
def test_real_fashion_mnist_full_is_fast() -> None:
    start = time.perf_counter()
    data = od.load_fashion_mnist()
    elapsed = time.perf_counter() - start
    assert (data["train"].num_rows, data["test"].num_rows) == (60_000, 10_000)
    assert np.bincount(list(data["train"]["label"])).tolist() == [6000] * 10
    assert np.bincount(list(data["test"]["label"])).tolist() == [1000] * 10
    assert data["test"].with_format("torch")[-1]["pixel_values"].shape == (3, 32, 32)
    assert elapsed < 30, f"loading Fashion-MNIST took {elapsed:.1f} s"
