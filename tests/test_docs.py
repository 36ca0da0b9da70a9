"""Every ```python block of the README and docs/ runs, so the docs cannot rot.

Blocks run in order, per file, in one namespace that starts with small stand-ins for what the prose assumes
(`model`, `train`, `val`, `tokenizer`, `compute_metrics`, a trained `trainer`), inside a temporary directory.
A block right after a line `<!-- doctest: skip -->` is not run (it needs the Hub or a GPU); the test checks
that such blocks stay a minority.
"""

import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import CommitInfo, HfApi

import emp_hf.records.load
from emp_hf import EMPTrainer
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- doctest: skip -->\s*\n)?```python\n(.*?)```", re.S)


def python_blocks(path: Path) -> list[tuple[bool, str]]:
    return [(bool(skip), textwrap.dedent(code)) for skip, code in BLOCK.findall(path.read_text())]


def compute_metrics(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def fake_hub(monkeypatch, remote: Path) -> None:
    """Pushes land in `remote/<repo_id>`, downloads come from there: the snippets never reach the Hub."""

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)
        return CommitInfo(
            commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{'0' * 40}",
            commit_message="",
            commit_description="",
            oid="0" * 40,
        )

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(
        emp_hf.records.load, "download_pruning_record", lambda repo_id, **kwargs: str(remote / repo_id)
    )


@pytest.fixture
def namespace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_hub(monkeypatch, tmp_path / "remote")
    train, val = make_text_dataset(64), make_text_dataset(32, seed=1)
    trainer = EMPTrainer(model=make_bert(), args=make_args(tmp_path, num_train_epochs=2), train_dataset=train)
    trainer.train()
    return {
        "model": make_bert(),
        "train": train,
        "val": val,
        "dataset": train,
        "tokenizer": None,
        "compute_metrics": compute_metrics,
        "trainer": trainer,
    }


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_snippets_run(path, namespace):
    blocks = python_blocks(path)
    ran = 0
    for index, (skip, code) in enumerate(blocks):
        if skip:
            continue
        try:
            exec(compile(code, f"{path.name}[block {index}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path.name}, python block {index} failed: {error!r}\n{code}")
        ran += 1
    assert ran >= len(blocks) / 2, f"{path.name}: most python blocks are skipped"
