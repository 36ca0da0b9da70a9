"""The version ranges in pyproject.toml say what is tested: the pins (constraints.txt) and the newest releases
(constraints-latest.txt), both run by CI (.ci/run)."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from emp_hf.integration.compat import TESTED_TRANSFORMERS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: The Hugging Face stack emp_hf builds on: each range is capped at the newest release tested.
CAPPED = ("transformers", "datasets", "accelerate", "huggingface-hub", "trl", "peft")
LANES = ("constraints.txt", "constraints-latest.txt")


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    requirements: dict[str, Requirement] = {}
    for spec in specs:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name in requirements:  # an extra repeats a dependency: both ranges must hold
            requirement = Requirement(f"{name}{requirements[name].specifier & requirement.specifier}")
        requirements[name] = requirement
    return requirements


def _pins(file: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{file}: {line} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


@pytest.mark.parametrize("name", CAPPED)
def test_each_range_is_capped(name):
    specifier = _requirements()[name].specifier
    assert any(s.operator in ("<", "<=", "==", "~=") for s in specifier), f"{name}{specifier} has no upper bound"


def test_both_lanes_pin_the_same_packages():
    assert _pins(LANES[0]).keys() == _pins(LANES[1]).keys()
    assert set(CAPPED) <= _pins(LANES[0]).keys()


@pytest.mark.parametrize("lane", LANES)
def test_each_lane_satisfies_the_ranges(lane):
    requirements = _requirements()
    unmet = [
        f"{name}=={version} is outside {requirements[name].specifier}"
        for name, version in _pins(lane).items()
        if name in requirements and not requirements[name].specifier.contains(version, prereleases=True)
    ]
    assert not unmet, f"{lane}: " + "; ".join(unmet)


def test_the_newest_lane_is_the_upper_end():
    """Each capped range ends at the newest tested release's minor series: a wider one claims untested releases."""
    latest, requirements = _pins(LANES[1]), _requirements()
    for name in CAPPED:
        major, minor = (int(part) for part in latest[name].split(".")[:2])
        next_minor = f"{major}.{minor + 1}"
        assert not requirements[name].specifier.contains(next_minor), f"{name}{requirements[name].specifier}"


def test_the_canary_names_the_tested_transformers():
    assert SpecifierSet(TESTED_TRANSFORMERS) == _requirements()["transformers"].specifier
    for lane in LANES:
        assert SpecifierSet(TESTED_TRANSFORMERS).contains(_pins(lane)["transformers"])


def test_ci_runs_both_lanes():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test-all" in ci and "make test-latest" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert "EMP_HF_CONSTRAINTS=constraints-latest.txt" in makefile


def test_the_faq_table_says_what_the_files_say():
    """docs/faq.md's table of ranges and tested versions is read from pyproject.toml and both constraint files."""
    faq = (ROOT / "docs" / "faq.md").read_text()
    rows = re.findall(r"^\| ([\w_]+)[^|]* \| `([^`]+)` \| ([\w.]+) \| ([\w.]+) \|$", faq, re.M)
    assert {canonicalize_name(name) for name, *_ in rows} == set(CAPPED)
    requirements, pinned, latest = _requirements(), _pins(LANES[0]), _pins(LANES[1])
    for name, spec, pin, newest in rows:
        name = canonicalize_name(name)
        assert (SpecifierSet(spec), pin, newest) == (requirements[name].specifier, pinned[name], latest[name]), name
