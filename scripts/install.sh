#!/usr/bin/env bash
# One idempotent install step: creates .venv and installs every pinned dependency of the project.
#
#   bash scripts/install.sh            # called by `make demo`, `make test`, `make bench`
#
# Environment variables:
#   PYTHON                 interpreter used to create the venv (default: python3.11, else python3)
#   L2G_VENV               venv location (default: <repo>/.venv)
#   L2G_DETECTRON2_SOURCE  where detectron2 comes from:
#                            "pypi-wheel" (default) — the PyPI republish sal-detectron2==0.7.2 (official detectron2
#                                            commit a59f056), sha256-checked and re-tagged py3-none-any;
#                            any other value  — a pip requirement passed to `pip install --no-build-isolation`,
#                                            e.g. 'git+https://github.com/facebookresearch/detectron2.git'
#                                            for users with internet who want the official source (builds _C).
# A stamp file (.venv/.l2g-install-stamp) holds a hash of this script and requirements.txt: when it matches,
# the step returns in well under a second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${L2G_VENV:-$ROOT/.venv}"
D2_SOURCE="${L2G_DETECTRON2_SOURCE:-pypi-wheel}"
D2_WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

stamp_value() {
  cat "$ROOT/scripts/install.sh" "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
  echo "$D2_SOURCE"
}

STAMP="$VENV/.l2g-install-stamp"
if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(stamp_value)" ]] && [[ -x "$VENV/bin/python" ]]; then
  exit 0
fi

log() { printf '[install] %s\n' "$*" >&2; }
start=$(date +%s)

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

log "installing torch + torchvision (${TORCH_PINS[*]})"
"${PIP[@]}" install -q "${TORCH_PINS[@]}"

log "installing pinned requirements"
"${PIP[@]}" install -q -r "$ROOT/requirements.txt"

if [[ "$D2_SOURCE" == "pypi-wheel" ]]; then
  if "$PY" -c "import detectron2, sys; sys.exit(0 if detectron2.__version__.startswith('0.7.2') else 1)" 2>/dev/null; then
    log "detectron2 already installed"
  else
    log "installing detectron2 from the PyPI wheel sal-detectron2==0.7.2 (re-tagged py3-none-any)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 sal-detectron2==0.7.2 -d "$work/dl"
    whl="$(ls "$work"/dl/sal_detectron2-0.7.2-*.whl)"
    echo "$D2_WHEEL_SHA256  $whl" | sha256sum -c --quiet - || { log "sha256 mismatch for $whl"; exit 1; }
    "${PIP[@]}" install -q wheel==0.45.1
    "$PY" -m wheel unpack -d "$work/unpacked" "$whl" >/dev/null
    pkgdir="$(ls -d "$work"/unpacked/sal_detectron2-0.7.2)"
    distinfo="$(ls -d "$pkgdir"/*.dist-info)"
    # The cp310-only compiled extension can never load on 3.11: drop it (import detectron2._C then fails cleanly).
    rm -f "$pkgdir"/detectron2/_C*.so
    # A stray top-level `tools` package shadows any tools/ folder of ours.
    rm -rf "$pkgdir/tools"
    sed -i '/^tools$/d' "$distinfo/top_level.txt"
    grep -v -E '^(tools/|detectron2/_C)' "$distinfo/RECORD" > "$distinfo/RECORD.new" && mv "$distinfo/RECORD.new" "$distinfo/RECORD"
    sed -i -e 's/^Tag: .*/Tag: py3-none-any/' -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' "$distinfo/WHEEL"
    mkdir -p "$work/packed"
    SOURCE_DATE_EPOCH=1700000000 "$PY" -m wheel pack -d "$work/packed" "$pkgdir" >/dev/null
    "${PIP[@]}" install -q --no-deps --force-reinstall "$work"/packed/*.whl
  fi
else
  log "installing detectron2 from: $D2_SOURCE"
  "${PIP[@]}" install -q --no-build-isolation "$D2_SOURCE"
fi

# trackeval (HOTA / IDF1 for the benchmarks' tracking figures): its declared pins want opencv-python, which clashes
# with opencv-python-headless (same cv2 module); everything else it needs is already pinned above.
log "installing trackeval (--no-deps)"
"${PIP[@]}" install -q --no-deps trackeval==1.3.0

log "installing the local2global package (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'PY'
import torch, detectron2, local2global  # noqa: F401
from detectron2.config import LazyConfig  # noqa: F401
print(f"[install] ok: torch {torch.__version__}, detectron2 {detectron2.__version__}")
PY
stamp_value > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
