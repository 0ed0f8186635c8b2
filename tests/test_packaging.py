"""Packaging: the declared dependency ranges agree with the lock (requirements.txt), detectron2 is checked at import
with an install hint, the console entry points resolve, no script edits ``sys.path``, and ``pip install -e .`` into
a fresh venv that already has torch and detectron2 installs nothing else (offline) and gives working commands.
"""

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import import_module
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SITE = Path(sysconfig.get_paths()["purelib"])
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
ENTRY_POINTS = ("l2g-train", "l2g-eval", "l2g-demo", "l2g-score", "l2g-make-local-split")


def _lock() -> dict:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = next(iter(req.specifier)).version
    return pins


def test_dependencies_are_ranges_that_the_lock_satisfies():
    deps = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    names = {d.name.lower() for d in deps}
    assert "detectron2" not in names and "sal-detectron2" not in names
    assert {"torch", "torchvision", "numpy", "pycocotools", "omegaconf", "fvcore", "opencv-python-headless"} <= names
    lock = _lock()
    lock.update(torch="2.14.1", torchvision="0.29.1")  # pinned in scripts/install.sh (TORCH_PINS)
    for d in deps:
        assert not any(s.operator == "==" for s in d.specifier), f"{d}: a range, not a pin"
        assert d.name.lower() in lock, f"{d.name} is not in the lock (requirements.txt)"
        assert d.specifier.contains(lock[d.name.lower()]), f"the lock's {d.name}=={lock[d.name.lower()]} violates {d}"
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"tests", "benchmarks", "kernels"} <= set(extras)
    assert any(Requirement(r).name == "torch-ms-deform-attn" for r in extras["kernels"])
    for r in extras["tests"]:
        assert Requirement(r).specifier.contains(lock[Requirement(r).name.lower()])


def test_installer_keeps_the_lock_installing_the_project_without_deps():
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert re.search(r'install -q --no-deps --no-build-isolation -e "\$ROOT"', install)


def test_entry_points_resolve_to_callables():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(ENTRY_POINTS) <= set(scripts)
    for name, target in scripts.items():
        module, attr = target.split(":")
        assert callable(getattr(import_module(module), attr)), name


def test_no_script_edits_sys_path():
    offenders = [p.name for p in (ROOT / "scripts").glob("*.py") if "sys.path" in p.read_text()]
    assert offenders == []


def test_import_without_detectron2_says_how_to_install_it():
    code = "import sys; sys.modules['detectron2'] = None; import local2global"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: local2global needs detectron2, which is not on PyPI under its own name")
    assert "git+https://github.com/facebookresearch/detectron2.git" in last and "scripts/install.sh" in last


def _venv_with_this_environment(tmp_path: Path) -> Path:
    """A venv (no pip of its own) that sees this environment's packages through a .pth file, without the editable
    local2global (symlinks in a folder; a .pth in a folder named by another .pth is not processed)."""
    exposed = tmp_path / "site"
    exposed.mkdir()
    for entry in SITE.iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or name.startswith(("__editable__", "local2global", "__pycache__")):
            continue
        (exposed / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    Path(site, "this-environment.pth").write_text(f"{exposed}\n")
    return venv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_editable_into_an_environment_with_torch_and_detectron2(tmp_path):
    """``pip install -e .`` with the declared dependencies (not --no-deps), offline: everything is already there,
    so it installs only the package; the entry points run, and one tiny training step runs from another folder."""
    venv = _venv_with_this_environment(tmp_path)
    python, bindir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
                           "--no-build-isolation", "-e", str(ROOT)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Successfully installed local2global-0.1.0" in proc.stdout
    for name in ENTRY_POINTS:
        out = subprocess.run([str(bindir / name), "--help"], capture_output=True, text=True, env=env, timeout=300,
                             cwd=tmp_path)
        assert out.returncode == 0 and "usage:" in out.stdout, (name, out.stderr[-2000:])
    where = subprocess.check_output([str(python), "-c", "import local2global; print(local2global.__file__)"],
                                    text=True, env=env, cwd=tmp_path).strip()
    assert where == str(ROOT / "projects" / "local2global" / "__init__.py")

    from local2global.data.synthetic import ensure_synthetic_vis

    syn = tmp_path / "synthetic_vis"
    ensure_synthetic_vis(str(syn), num_train=2, num_valid=1, min_length=4, max_length=4, num_long=0)
    out = tmp_path / "run"
    train = subprocess.run([str(bindir / "l2g-train"), "--config-file",
                            str(ROOT / "configs" / "local2global_tiny_synthetic.py"), "train.device=cpu",
                            "train.max_iter=1", "train.eval_period=-1", "dataloader.train.total_batch_size=1",
                            f"train.output_dir={out}"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                           env=dict(env, L2G_SYNTHETIC_ROOT=str(syn)))
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (out / "model_final.pth").is_file() and '"iteration": 0' in (out / "metrics.json").read_text()
