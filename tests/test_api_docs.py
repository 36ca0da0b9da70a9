"""docs/api.md is what `scripts/generate_api_docs.py` makes from its template and the docstrings: it cannot drift."""

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emp_hf import STRATEGIES, PruningArguments

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_api_docs", ROOT / "scripts" / "generate_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.subprocess
def test_the_committed_api_reference_is_current():
    """In a fresh process: a strategy that another test registers must not reach the reference."""
    generator = load_generator()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_api_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        timeout=300,
    )
    assert done.returncode == 0, f"docs/api.md is out of date: run `{generator.COMMAND}`\n{done.stderr}"


def test_the_reference_names_every_strategy_and_option():
    text = (ROOT / "docs" / "api.md").read_text()
    assert all(f"### `{name}`" in text for name in STRATEGIES)
    assert all(f"| `{field.name}` |" in text for field in dataclasses.fields(PruningArguments))


def test_an_unknown_section_in_the_template_is_refused():
    with pytest.raises(SystemExit, match="nothing-of-that-name"):
        load_generator().render("<!-- generate: nothing-of-that-name -->\n")
