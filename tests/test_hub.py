"""Pushing records to the Hub, with the network boundary replaced in the test (never the real Hub)."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import datasets
import pytest
from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError
from test_record import N, make_dataset, make_state

import emp_hf.records.hub
from emp_hf.records.export import export_pruning_record, save_pruning_record
from emp_hf.records.hub import default_record_repo_id, push_pruning_record, push_trainer_pruning_record
from emp_hf.records.load import load_pruning_record, select_rows
from emp_hf.records.record import RECORD_FILE
from emp_hf_dev.fixtures import make_args, make_bert


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replace the `HfApi` calls that touch the network: record them and keep the uploaded folders."""
    calls: list[tuple[str, dict]] = []
    remote = tmp_path / "remote"

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", dict(kwargs)))
        target = remote / kwargs["repo_id"] / (kwargs.get("revision") or "main")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(kwargs["folder_path"], target)
        full_id = kwargs["repo_id"] if "/" in kwargs["repo_id"] else f"me/{kwargs['repo_id']}"
        return CommitInfo(
            commit_url=f"https://huggingface.co/datasets/{full_id}/commit/{'c' * 40}",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="c" * 40,
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return SimpleNamespace(calls=calls, remote=remote)


def test_push_record_creates_a_dataset_repo_and_uploads_it(fake_hub):
    dataset = make_dataset()
    record = export_pruning_record(make_state(fingerprint=dataset._fingerprint), model_name="tiny-bert")
    info = push_pruning_record(record, "me/record", private=True, token="hf_test", commit_message="run 1")
    assert info.oid == "c" * 40

    names = [name for name, _ in fake_hub.calls]
    assert names == ["create_repo", "upload_folder"]
    create, upload = fake_hub.calls[0][1], fake_hub.calls[1][1]
    assert create == {
        "repo_id": "me/record", "token": "hf_test", "repo_type": "dataset", "exist_ok": True, "private": True
    }  # fmt: skip
    assert upload["repo_id"] == "me/record" and upload["repo_type"] == "dataset"
    assert upload["revision"] is None and upload["commit_message"] == "run 1"

    uploaded = fake_hub.remote / "me" / "record" / "main"
    assert sorted(os.listdir(uploaded)) == ["README.md", "plans.parquet", RECORD_FILE, "rows.parquet"]
    loaded = load_pruning_record(uploaded)
    for epoch in range(record.num_epochs):
        assert select_rows(dataset, loaded, epoch=epoch)["x"] == select_rows(dataset, record, epoch=epoch)["x"]
    assert loaded.top_k(5) == record.top_k(5)


def test_push_to_a_revision_creates_the_branch(fake_hub, tmp_path):
    directory = save_pruning_record(export_pruning_record(make_state()), tmp_path / "record", plots=True)
    push_pruning_record(directory, "me/record", revision="run-2")
    names = [name for name, _ in fake_hub.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert fake_hub.calls[0][1]["private"] is None  # the Hub's default visibility
    branch = {"repo_id": "me/record", "branch": "run-2", "repo_type": "dataset", "exist_ok": True}
    assert fake_hub.calls[1][1] == branch
    assert fake_hub.calls[2][1]["revision"] == "run-2"
    assert fake_hub.calls[2][1]["folder_path"] == directory  # a record directory is uploaded as it is
    assert os.path.isfile(fake_hub.remote / "me" / "record" / "run-2" / "plots" / "kept_fraction.png")


def test_push_trainer_record_reads_the_trainer_arguments(fake_hub, tmp_path):
    args = make_args(tmp_path, hub_token="hf_args", hub_private_repo=True)
    trainer = SimpleNamespace(
        args=args, pruning_state=make_state(), model=make_bert(), state=SimpleNamespace(global_step=7)
    )
    push_trainer_pruning_record(trainer)
    create, upload = fake_hub.calls[0][1], fake_hub.calls[-1][1]
    assert create["repo_id"] == default_record_repo_id(args) == "out-pruning-record"
    assert create["token"] == "hf_args" and create["private"] is True
    assert upload["commit_message"] == "Pruning record at step 7 (emp_hf)"
    loaded = load_pruning_record(fake_hub.remote / "out-pruning-record" / "main")
    assert loaded.metadata["source"] == {"global_step": 7}
    assert loaded.metadata["options"]["pruning_method"] == "random"

    # the pruning-record fields, once EMPConfig has them, take precedence
    args.pruning_record_repo_id, args.pruning_record_private = "team/records", False
    push_trainer_pruning_record(trainer, commit_message="final", save_dir=tmp_path / "kept")
    create, upload = fake_hub.calls[-2][1], fake_hub.calls[-1][1]
    assert create["repo_id"] == "team/records" and create["private"] is False
    assert upload["commit_message"] == "final"
    assert upload["folder_path"] == str(tmp_path / "kept")  # saved locally first, then pushed
    assert load_pruning_record(tmp_path / "kept").plan(1) == loaded.plan(1)


def test_load_from_the_hub_downloads_a_dataset_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    record = export_pruning_record(make_state())
    snapshot = save_pruning_record(record, tmp_path / "snapshot")
    seen = []

    def snapshot_download(repo_id, **kwargs):
        seen.append((repo_id, kwargs))
        if repo_id == "me/missing":
            raise RepositoryNotFoundError("404", response=SimpleNamespace(headers={}, request=None, status_code=404))
        return snapshot

    monkeypatch.setattr(emp_hf.records.hub, "snapshot_download", snapshot_download)
    loaded = load_pruning_record("me/record", revision="run-2", token="hf_test")
    assert loaded.plan(1) == record.plan(1)
    repo_id, kwargs = seen[0]
    assert repo_id == "me/record" and kwargs["repo_type"] == "dataset"
    assert kwargs["revision"] == "run-2" and kwargs["token"] == "hf_test"
    assert "local_files_only" not in kwargs
    with pytest.raises(FileNotFoundError, match="HF_TOKEN"):
        load_pruning_record("me/missing")


# ---------------------------------------------------------------------- end to end through huggingface_hub
class _FakeHubHandler(BaseHTTPRequestHandler):
    """The few Hub API routes a small `upload_folder` into a dataset repo uses."""

    hub: SimpleNamespace

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urlparse(self.path)
        self.hub.requests.append((url.path, parse_qs(url.query), self.headers.get("Authorization"), body))
        if url.path == "/api/repos/create":
            payload = json.loads(body)
            self.hub.created.append(payload)
            repo_id = f"{payload['organization']}/{payload['name']}"
            return self._reply(200, {"url": f"{self.hub.endpoint}/datasets/{repo_id}", "name": repo_id})
        if url.path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if match := re.fullmatch(r"/api/datasets/(.+)/preupload/(.+)", url.path):
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return self._reply(200, {"files": modes})
        if match := re.fullmatch(r"/api/datasets/(.+)/commit/(.+)", url.path):
            repo_id, revision = match.groups()
            lines = [json.loads(line) for line in body.decode().splitlines() if line]
            self.hub.commits.append((repo_id, revision, lines[0]["value"]["summary"]))
            for line in lines[1:]:
                assert line["key"] == "file" and line["value"]["encoding"] == "base64"
                path = self.hub.root / repo_id / line["value"]["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base64.b64decode(line["value"]["content"]))
            url = f"{self.hub.endpoint}/datasets/{repo_id}/commit/{'d' * 40}"
            return self._reply(200, {"commitUrl": url, "commitOid": "d" * 40, "pullRequestUrl": None})
        return self._reply(404, {"error": f"not a fake-Hub route: {url.path}"})


@pytest.fixture
def hub_server(tmp_path):
    hub = SimpleNamespace(requests=[], created=[], commits=[], root=tmp_path / "hub-repos")
    handler = type("Handler", (_FakeHubHandler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()


@pytest.mark.subprocess
def test_cli_push_through_huggingface_hub_to_a_local_server(hub_server, tmp_path):
    """`emp-hf push` in a fresh process: HF_ENDPOINT and HF_TOKEN are honoured, the files arrive intact."""
    dataset = make_dataset()
    record = export_pruning_record(make_state(fingerprint=dataset._fingerprint))
    directory = save_pruning_record(record, tmp_path / "record")
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_server.endpoint,
        "HF_TOKEN": "hf_fake_token",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, "-m", "emp_hf.cli", "push", directory, "--repo-id", "me/record", "--private"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{hub_server.endpoint}/datasets/me/record/commit/" in done.stdout

    assert hub_server.created == [{"name": "record", "organization": "me", "visibility": "private", "type": "dataset"}]
    assert {auth for _, _, auth, _ in hub_server.requests} == {"Bearer hf_fake_token"}
    assert hub_server.commits == [("me/record", "main", "Upload pruning record (emp_hf)")]
    uploaded = hub_server.root / "me" / "record"
    assert sorted(os.listdir(uploaded)) == ["README.md", "plans.parquet", RECORD_FILE, "rows.parquet"]
    for name in os.listdir(uploaded):
        assert (uploaded / name).read_bytes() == open(os.path.join(directory, name), "rb").read()
    loaded = load_pruning_record(uploaded)
    assert select_rows(dataset, loaded, epoch=3)["x"] == select_rows(dataset, record, epoch=3)["x"]
    assert isinstance(loaded.rows, datasets.Dataset) and len(loaded.rows) == N


def test_trainer_pushes_on_save_and_at_the_end(fake_hub, monkeypatch, tmp_path):
    from emp_hf import EMPTrainer
    from emp_hf_dev.fixtures import make_text_dataset

    calls, remote = fake_hub.calls, fake_hub.remote
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    args = make_args(
        tmp_path,
        num_train_epochs=2,
        save_strategy="epoch",
        push_pruning_record=True,
        pruning_record_repo_id="me/run-record",
        pruning_record_push_on_save=True,
    )
    data = make_text_dataset()
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=data)
    trainer.train()
    uploads = [c for name, c in calls if name == "upload_folder"]
    assert len(uploads) == 3  # two checkpoints, then the end of training
    assert all(c["repo_id"] == "me/run-record" and c["repo_type"] == "dataset" for c in uploads)
    pushed = load_pruning_record(str(remote / "me/run-record" / "main"))
    assert pushed.plan_sizes == trainer.pruning_state.epoch_plan_sizes
    assert (tmp_path / "out" / "pruning_record" / RECORD_FILE).exists()  # kept locally for a retry


def test_push_is_refused_before_training_when_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        make_args(tmp_path, push_pruning_record=True)
