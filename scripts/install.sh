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
#   L2G_USE_SYSTEM_TORCH=1 keep the torch / torchvision of $PYTHON (e.g. a GPU machine's CUDA build) instead of
#                          installing the pinned ones: the venv is created from $PYTHON, a .pth file in it points
#                          to the folder(s) holding $PYTHON's torch and torchvision (so it sees them, and everything
#                          else installed beside them, without reinstalling anything), their versions are checked
#                          (torch >= 2.4, < 3 and a torchvision), and the rest comes from requirements-existing-torch.txt
#                          (version ranges: packages already there that satisfy them are kept).
#   L2G_WHEELS=/path       install from this folder of wheels only (pip --no-index --find-links), e.g. on a machine
#                          without internet; it must hold what is missing there (scripts/gpu_smoke.sh --prepare-wheels
#                          makes one), including sal-detectron2's original wheel or its re-tagged py3-none-any wheel.
# A stamp file (.venv/.l2g-install-stamp) holds a hash of this script and the requirements file in use (plus, with
# L2G_USE_SYSTEM_TORCH=1, the torch version and the wheel folder): when it matches, the step returns in well under a
# second (with L2G_USE_SYSTEM_TORCH=1 the check imports torch first: a second or two). The default mode's stamp does
# not depend on the L2G_USE_SYSTEM_TORCH inputs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${L2G_VENV:-$ROOT/.venv}"
D2_SOURCE="${L2G_DETECTRON2_SOURCE:-pypi-wheel}"
D2_WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
USE_SYSTEM_TORCH="${L2G_USE_SYSTEM_TORCH:-0}"
WHEELS="${L2G_WHEELS:-}"
# The torch range accepted from the interpreter: torch.amp.GradScaler("cuda") (2.3+) and torch-ms-deform-attn's
# floor (2.4); the 2.x API only. The pinned, tested version is TORCH_PINS.
SYSTEM_TORCH_MIN="2.4"
SYSTEM_TORCH_BELOW="3"
if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
  REQUIREMENTS="$ROOT/requirements-existing-torch.txt"
else
  REQUIREMENTS="$ROOT/requirements.txt"
fi

log() { printf '[install] %s\n' "$*" >&2; }

if [[ -z "${PYTHON:-}" ]]; then
  if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then PYTHON=python3
  elif command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

# With L2G_USE_SYSTEM_TORCH=1: the folders holding $PYTHON's torch and torchvision, and their versions.
system_torch_info() {
  "$PYTHON" - <<'PY'
import os
try:
    import torch, torchvision
except Exception as exc:  # noqa: BLE001 - reported to the user as is
    print(f"ERROR {type(exc).__name__}: {exc}")
    raise SystemExit(0)
dirs = []
for mod in (torch, torchvision):
    d = os.path.dirname(os.path.dirname(os.path.abspath(mod.__file__)))
    if d not in dirs:
        dirs.append(d)
print("OK", torch.__version__, torchvision.__version__, *dirs)
PY
}

stamp_value() {
  cat "$ROOT/scripts/install.sh" "$REQUIREMENTS" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
  echo "$D2_SOURCE"
  if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
    echo "existing-torch $SYSTEM_TORCH_VERSION ${WHEELS:-registry}"
  fi
}

if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
  info="$(system_torch_info)"
  if [[ "$info" != OK* ]]; then
    log "L2G_USE_SYSTEM_TORCH=1 but '$PYTHON' cannot import torch and torchvision (${info#ERROR }); set PYTHON to"
    log "the interpreter that holds them, or install without L2G_USE_SYSTEM_TORCH to get the pinned ${TORCH_PINS[*]}"
    exit 1
  fi
  read -r _ SYSTEM_TORCH_VERSION SYSTEM_TORCHVISION_VERSION SYSTEM_TORCH_DIRS <<<"$info"
  if ! "$PYTHON" - "$SYSTEM_TORCH_VERSION" "$SYSTEM_TORCH_MIN" "$SYSTEM_TORCH_BELOW" <<'PY'
import re, sys
def key(v):
    return tuple(int(x) for x in re.match(r"(\d+(?:\.\d+)*)", v).group(1).split("."))
version, low, below = sys.argv[1:]
sys.exit(0 if key(low) <= key(version) < key(below) else 1)
PY
  then
    log "L2G_USE_SYSTEM_TORCH=1: '$PYTHON' has torch $SYSTEM_TORCH_VERSION, outside the supported range"
    log ">= $SYSTEM_TORCH_MIN, < $SYSTEM_TORCH_BELOW; upgrade it, or install without L2G_USE_SYSTEM_TORCH to get ${TORCH_PINS[*]}"
    exit 1
  fi
else
  SYSTEM_TORCH_VERSION=""
fi

STAMP="$VENV/.l2g-install-stamp"
if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(stamp_value)" ]] && [[ -x "$VENV/bin/python" ]]; then
  exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PYTHON --version 2>&1)"
  if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
    # A machine's Python may lack ensurepip: then the venv uses the pip installed beside torch (seen via the .pth).
    "$PYTHON" -m venv "$VENV" 2>/dev/null || { log "no ensurepip: venv without pip"; "$PYTHON" -m venv --clear --without-pip "$VENV"; }
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
if [[ -n "$WHEELS" ]]; then
  [[ -d "$WHEELS" ]] || { log "L2G_WHEELS=$WHEELS is not a folder"; exit 1; }
  PIP_SOURCE=(--no-index --find-links "$WHEELS")
  log "installing from the wheel folder $WHEELS only (no index)"
else
  PIP_SOURCE=()
fi

if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  printf '%s\n' $SYSTEM_TORCH_DIRS > "$site/l2g-existing-torch.pth"
  seen="$("$PY" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')"
  [[ "$seen" == "$SYSTEM_TORCH_VERSION $SYSTEM_TORCHVISION_VERSION" ]] || {
    log "the venv sees torch/torchvision '$seen', expected '$SYSTEM_TORCH_VERSION $SYSTEM_TORCHVISION_VERSION'"; exit 1; }
  log "keeping torch $SYSTEM_TORCH_VERSION and torchvision $SYSTEM_TORCHVISION_VERSION of $PYTHON (via $site/l2g-existing-torch.pth)"
  # Nothing below may replace them: a constraint that pins the versions found makes pip fail instead.
  constraints="$(mktemp)"
  printf 'torch==%s\ntorchvision==%s\n' "$SYSTEM_TORCH_VERSION" "$SYSTEM_TORCHVISION_VERSION" > "$constraints"
  # cv2 from opencv-python (not -headless) satisfies the code too: do not install a second copy of the module.
  reqs="$(mktemp)"
  if "$PY" -c "import cv2" 2>/dev/null; then
    grep -v -i '^opencv-python-headless' "$REQUIREMENTS" > "$reqs"
  else
    cp "$REQUIREMENTS" "$reqs"
  fi
  log "installing what is missing of $(basename "$REQUIREMENTS")"
  "${PIP[@]}" install -q "${PIP_SOURCE[@]}" -c "$constraints" -r "$reqs"
  rm -f "$constraints" "$reqs"
else
  log "installing torch + torchvision (${TORCH_PINS[*]})"
  "${PIP[@]}" install -q "${PIP_SOURCE[@]}" "${TORCH_PINS[@]}"

  log "installing pinned requirements"
  "${PIP[@]}" install -q "${PIP_SOURCE[@]}" -r "$REQUIREMENTS"
fi

if [[ "$D2_SOURCE" == "pypi-wheel" ]]; then
  if "$PY" -c "import detectron2, sys; sys.exit(0 if detectron2.__version__.startswith('0.7.2') else 1)" 2>/dev/null; then
    log "detectron2 already installed"
  elif [[ -n "$WHEELS" ]] && ls "$WHEELS"/sal_detectron2-0.7.2-py3-none-any.whl >/dev/null 2>&1; then
    log "installing the re-tagged detectron2 wheel from $WHEELS"
    "${PIP[@]}" install -q --no-deps "$WHEELS"/sal_detectron2-0.7.2-py3-none-any.whl
  else
    log "installing detectron2 from the PyPI wheel sal-detectron2==0.7.2 (re-tagged py3-none-any)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q "${PIP_SOURCE[@]}" --no-deps --only-binary=:all: --python-version 3.10 sal-detectron2==0.7.2 -d "$work/dl"
    whl="$(ls "$work"/dl/sal_detectron2-0.7.2-*.whl)"
    echo "$D2_WHEEL_SHA256  $whl" | sha256sum -c --quiet - || { log "sha256 mismatch for $whl"; exit 1; }
    "$PY" -c "import wheel" 2>/dev/null || "${PIP[@]}" install -q "${PIP_SOURCE[@]}" wheel==0.45.1
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
if [[ "$USE_SYSTEM_TORCH" == "1" ]]; then
  # Only the benchmarks' tracking figures need it: a wheel folder without it is no reason to stop.
  "${PIP[@]}" install -q "${PIP_SOURCE[@]}" --no-deps trackeval==1.3.0 \
    || log "trackeval not installed (benchmarks/cases/accuracy.py's HOTA / IDF1 need it)"
else
  "${PIP[@]}" install -q "${PIP_SOURCE[@]}" --no-deps trackeval==1.3.0
fi

log "installing the local2global package (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'PY'
import torch, detectron2, local2global  # noqa: F401
from detectron2.config import LazyConfig  # noqa: F401
print(f"[install] ok: torch {torch.__version__}, detectron2 {detectron2.__version__}")
PY
stamp_value > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
