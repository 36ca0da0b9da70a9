"""`emp-hf`: export, push and inspect the pruning record of an `EMPTrainer` run.

    emp-hf export OUTPUT_DIR --to DIR [--checkpoint CKPT] [--model-name NAME] [--plots] [--overwrite]
    emp-hf push OUTPUT_DIR_OR_RECORD_DIR --repo-id ID [--private] [--revision REV] [--token TOKEN]
    emp-hf inspect OUTPUT_DIR_OR_RECORD_DIR_OR_REPO [--plots DIR] [--json]

Also `python -m emp_hf ...`. See `docs/hub.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import zipfile
from collections.abc import Sequence
from typing import Any

from huggingface_hub.errors import HfHubHTTPError

from .records.export import record_from_output_dir, save_pruning_record
from .records.load import load_pruning_record
from .records.record import QUANTILE_LABELS, PruningRecord, resolve_record_source, used_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emp-hf", description="Export, push and inspect the pruning record of an EMPTrainer run."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="write the pruning record of a training output directory (parquet + dataset card)",
        description="Export the pruning record of a training run: its newest complete pruning_state.pt, the one "
        "at the top level of OUTPUT_DIR or the latest checkpoint's (by global step, else modification time).",
    )
    export.add_argument("output_dir", metavar="OUTPUT_DIR", help="training output or checkpoint directory")
    export.add_argument("--to", required=True, metavar="DIR", help="directory to write the record into")
    _add_checkpoint(export)
    export.add_argument("--model-name", help="model name to record (default: from the checkpoint's config.json)")
    export.add_argument("--plots", action="store_true", help="also write plots/*.png and embed them in the card")
    export.add_argument(
        "--overwrite", action="store_true", help="replace a README.md in DIR that is not a pruning record's card"
    )

    push = commands.add_parser(
        "push",
        help="upload a pruning record to a Hub dataset repo",
        description="Upload a pruning record (a record directory, or exported from a training output "
        "directory) to a Hub dataset repo, creating it if needed. HF_TOKEN and HF_ENDPOINT apply.",
    )
    push.add_argument("path", metavar="OUTPUT_DIR_OR_RECORD_DIR")
    push.add_argument("--repo-id", required=True, help="'namespace/name' of the dataset repo")
    _add_checkpoint(push)
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to commit to (created if missing)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    push.add_argument("--commit-message", default="Upload pruning record (emp_hf)")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--plots", action="store_true", help="also upload pictures (when exporting here)")

    inspect = commands.add_parser(
        "inspect",
        help="print a summary of a pruning record and optionally draw it",
        description="Summarise a pruning record from a training output directory, a record directory or a "
        "Hub dataset repo id.",
    )
    inspect.add_argument("source", metavar="OUTPUT_DIR_OR_RECORD_DIR_OR_REPO")
    _add_checkpoint(inspect)
    inspect.add_argument("--revision", help="revision of a Hub repo")
    inspect.add_argument("--token", help="Hub token for a private repo")
    inspect.add_argument("--plots", metavar="DIR", help="write the pictures (PNG) into DIR")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="checkpoint directory, name (checkpoint-500) or step (500) in a training output directory",
    )


def _load(command: str, source: str, checkpoint: str | None, revision: str | None = None, token: str | None = None):
    if checkpoint is not None:
        record = record_from_output_dir(source, checkpoint)
    else:
        record = load_pruning_record(source, revision=revision, token=token)
    _say_what_was_read(command, source, record)
    return record


#: The "read ..." line of the running command, printed on stderr when it succeeds (an error is its one line).
_READ: list[str] = []


def _say_what_was_read(command: str, source: str, record: PruningRecord | None) -> None:
    """Which file the record came from (the newest complete state or record, or a Hub repo): one line on stderr
    once the command succeeds."""
    if record is None:  # a record directory pushed as it is
        _READ[:] = [f"emp-hf {command}: read {source}"]
        return
    meta = record.metadata
    step = (meta.get("source") or {}).get("global_step", meta.get("global_step"))
    where = record.source_path if os.path.exists(source) else f"the Hub dataset repo {source}"
    _READ[:] = [f"emp-hf {command}: read {where}" + (f" (global step {step})" if step is not None else "")]


def cmd_export(args: argparse.Namespace) -> int:
    record = record_from_output_dir(args.output_dir, args.checkpoint, model_name=args.model_name)
    _say_what_was_read("export", args.output_dir, record)
    directory = save_pruning_record(record, args.to, plots=args.plots, overwrite=args.overwrite)
    source = record.metadata.get("source", {}).get("checkpoint")
    print(
        f"Wrote the pruning record of {args.output_dir}"
        + (f" ({source})" if source else "")
        + f" to {directory}: {record.num_rows} rows, {record.num_epochs} epochs, "
        f"realised saving {record.realized_saving:.2%}."
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .records.hub import push_pruning_record

    kind, path = ("training_output", args.path) if args.checkpoint else resolve_record_source(args.path)
    source: Any = path
    if kind == "record_dir":  # uploaded as it is
        _say_what_was_read("push", path, None)
    else:  # the newest complete state of a training output (or the checkpoint asked for)
        source = record_from_output_dir(path, args.checkpoint)
        _say_what_was_read("push", args.path, source)
    info = push_pruning_record(
        source,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        plots=args.plots,
    )
    print(f"Pushed the pruning record to the dataset repo {args.repo_id}: {info.pr_url or info.commit_url}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    record = _load("inspect", args.source, args.checkpoint, args.revision, args.token)
    summary = record.summary()
    paths: list[str] = []
    if args.plots:
        from .records.plots import save_pruning_plots

        paths = save_pruning_plots(record, args.plots)
    if args.json:
        print(json.dumps({**summary, "plots": paths}, indent=2))
    else:
        print(format_summary(record, summary, title=args.source))
        for path in paths:
            print(f"wrote {path}")
    return 0


def format_summary(record: PruningRecord, summary: dict[str, Any], title: str = "") -> str:
    """The summary table `emp-hf inspect` prints."""
    n = summary["rows"]

    def share(count: int | None) -> str:
        return "n/a (no pruned epoch)" if count is None else f"{count} ({count / n:.1%})"

    quantiles = summary["frequency_quantiles"]
    options = used_options(record.metadata)
    table = [
        ("rows", n),
        ("epochs", f"{summary['epochs']} ({summary['pruned_epochs']} pruned)"),
        ("method", summary["method"]),
        ("prune ratio", summary["prune_ratio"]),
        ("realised saving", f"{summary['realized_saving']:.2%}"),
        ("rows per epoch", ", ".join(str(s) for s in summary["plan_sizes"]) or None),
        ("model", summary["model"]),
        ("dataset fingerprint", summary["dataset_fingerprint"]),
        ("frequency " + "/".join(QUANTILE_LABELS), " / ".join(_number(quantiles[k]) for k in QUANTILE_LABELS)),
        ("frequency mean", _number(summary["frequency_mean"])),
        ("never visited", share(summary["never_visited"])),
        ("never revisited after warm-up", share(summary["never_revisited_after_warmup"])),
        ("in every epoch", share(summary["in_every_epoch"])),
        ("non-finite losses", summary["nonfinite_losses"]),
        ("likely mislabelled", _likely_mislabelled(summary["likely_mislabelled"])),
        ("score", record.metadata.get("score_definition")),
        ("options", ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or None),
        ("emp_hf version", summary["emp_hf_version"]),
    ]
    width = max(len(key) for key, _ in table)
    lines = [f"pruning record: {title}"] if title else []
    lines += [f"  {key:<{width}}  {'-' if value is None else value}" for key, value in table]
    return "\n".join(lines)


#: How `emp-hf inspect` names the statistic its likely mislabelled rows are ranked by.
MISLABEL_STATISTICS = {"margin": "lowest area under the margin (AUM)", "loss": "largest last loss"}


def _likely_mislabelled(found: dict[str, Any] | None) -> str | None:
    """`rows 12, 7, ... (by the lowest area under the margin (AUM))`: the summary's likely mislabelled rows."""
    if found is None:
        return None
    rows = ", ".join(str(row) for row in found["rows"])
    return f"rows {rows} (by the {MISLABEL_STATISTICS[found['statistic']]})"


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


COMMANDS = {"export": cmd_export, "push": cmd_push, "inspect": cmd_inspect}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `emp-hf`; returns the exit status (1 on a user-facing error)."""
    args = build_parser().parse_args(argv)
    _READ.clear()
    try:
        status = COMMANDS[args.command](args)
        for line in _READ:
            print(line, file=sys.stderr)
        return status
    except (OSError, ValueError, HfHubHTTPError) as e:
        print(f"emp-hf {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        KeyError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
    ) as e:
        print(
            f"emp-hf {args.command}: error: cannot read {_source_of(args)} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}): a file is truncated, damaged, edited or "
            "not written by emp_hf.",
            file=sys.stderr,
        )
        return 1
    except Exception as e:
        if not _is_network_error(e):
            raise
        from huggingface_hub import constants

        print(
            f"emp-hf {args.command}: error: cannot reach the Hub at {constants.ENDPOINT} ({type(e).__name__}: {e}). "
            "Check the network and HF_ENDPOINT, then run the command again.",
            file=sys.stderr,
        )
        return 1


def _source_of(args: argparse.Namespace) -> str:
    return getattr(args, "source", None) or getattr(args, "path", None) or getattr(args, "output_dir", "the record")


def _is_network_error(error: BaseException) -> bool:
    """A connection or transport error of the HTTP client huggingface_hub uses (requests, httpx or httpx2)."""
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return any(
        c.__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}
        for c in type(error).__mro__
    )


if __name__ == "__main__":
    sys.exit(main())
