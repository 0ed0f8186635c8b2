"""scripts/install.sh with L2G_USE_SYSTEM_TORCH=1 (keep the interpreter's torch) and L2G_WHEELS (a local wheel folder).

The "machine's own Python" is a venv that sees this test environment's packages (torch included) through a .pth
file, except two pure-Python packages (yacs, termcolor) that only the wheel folder has: the installer must keep
that torch (no reinstall), install the two from the folder without an index, and be a no-op the second time.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
# Packages left out of the exposed environment, so that the installer has to take them from the wheel folder.
WITHHELD = ("yacs", "termcolor")
SITE = Path(sysconfig.get_paths()["purelib"])
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def _run_install(env_extra, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("L2G_", "PIP_", "VIRTUAL_ENV"))}
    env.update(env_extra)
    return subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=timeout)


def _fake_system_python(tmp_path: Path, exposed: Path) -> Path:
    """A venv without pip whose site-packages has a .pth to ``exposed`` (the machine's preinstalled packages)."""
    venv = tmp_path / "system"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
                .strip())
    (site / "machine-packages.pth").write_text(f"{exposed}\n")
    return venv / "bin" / "python"


def _expose_site_packages(target: Path) -> None:
    """Symlink every installed distribution of this environment into ``target``, except the withheld ones, the
    .pth files and the editable local2global (a .pth in a folder named by another .pth is not processed)."""
    target.mkdir()
    for entry in SITE.iterdir():
        name = entry.name.lower()
        if name.endswith(".pth") or name.startswith(("__editable__", "local2global", "__pycache__")):
            continue
        if any(name == w or name.startswith(f"{w}-") for w in WITHHELD):
            continue
        (target / entry.name).symlink_to(entry)


def _repack_installed_wheel(name: str, out: Path) -> None:
    """Make ``name``'s wheel from its installed files (pure Python), so the test needs no network."""
    dist = next(SITE.glob(f"{name}-*.dist-info"))
    version = dist.name[len(name) + 1:-len(".dist-info")]
    staging = out.parent / "staging" / f"{name}-{version}"
    staging.mkdir(parents=True)
    shutil.copytree(SITE / name, staging / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(dist, staging / dist.name)
    for extra in ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json"):
        (staging / dist.name / extra).unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(out), str(staging)], check=True,
                   capture_output=True, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_existing_torch_is_kept_and_the_rest_comes_from_the_wheel_folder(tmp_path):
    pytest.importorskip("wheel")
    exposed = tmp_path / "machine-site-packages"
    _expose_site_packages(exposed)
    system_python = _fake_system_python(tmp_path, exposed)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in WITHHELD:
        _repack_installed_wheel(name, wheels)
    venv = tmp_path / "venv"
    env = {"PYTHON": str(system_python), "L2G_VENV": str(venv), "L2G_USE_SYSTEM_TORCH": "1",
           "L2G_WHEELS": str(wheels)}

    first = _run_install(env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"keeping torch {torch.__version__}" in first.stderr
    assert "from the wheel folder" in first.stderr

    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import os, torch, yacs, termcolor, local2global; "
                            "print(torch.__version__); print(os.path.realpath(torch.__file__)); "
                            "print(os.path.realpath(yacs.__file__))"],
                           capture_output=True, text=True, timeout=120, check=True).stdout.split("\n")
    assert probe[0] == torch.__version__
    assert probe[1] == os.path.realpath(torch.__file__)  # the very same files: not reinstalled
    venv_site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; "
                                              "print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    assert Path(probe[2]).is_relative_to(venv_site.resolve())  # a withheld package, installed from the folder
    assert not (venv_site / "torch").exists() and not list(venv_site.glob("torch-*.dist-info"))
    assert (venv_site / "l2g-existing-torch.pth").read_text().split() == [str(exposed)]
    stamp = (venv / ".l2g-install-stamp").read_text().splitlines()
    assert stamp[-1] == f"existing-torch {torch.__version__} {wheels}"

    second = _run_install(env, timeout=120)  # the stamp matches: nothing to do, nothing printed
    assert second.returncode == 0 and second.stderr == "" and second.stdout == ""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fake_version", ["1.13.1", None])
def test_existing_torch_outside_the_supported_range_or_missing_stops_with_a_clear_message(tmp_path, fake_version):
    exposed = tmp_path / "machine-site-packages"
    exposed.mkdir()
    if fake_version is not None:
        for name, version in (("torch", fake_version), ("torchvision", "0.14.1")):
            (exposed / name).mkdir()
            (exposed / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    system_python = _fake_system_python(tmp_path, exposed)
    venv = tmp_path / "venv"
    result = _run_install({"PYTHON": str(system_python), "L2G_VENV": str(venv), "L2G_USE_SYSTEM_TORCH": "1"})
    assert result.returncode == 1
    if fake_version is not None:
        assert f"has torch {fake_version}, outside the supported range" in result.stderr
    else:
        assert "cannot import torch and torchvision (ModuleNotFoundError" in result.stderr
    assert not venv.exists()  # stopped before creating anything


def test_default_mode_stamp_depends_only_on_the_pinned_inputs(tmp_path):
    """The default path stays idempotent: a venv whose stamp is the hash of install.sh, requirements.txt and
    pyproject.toml (plus the detectron2 source) is left alone, whatever requirements-existing-torch.txt holds."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(BASE_PYTHON)
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in
                                     ("scripts/install.sh", "requirements.txt", "pyproject.toml"))).hexdigest()
    (venv / ".l2g-install-stamp").write_text(f"{digest}\npypi-wheel\n")
    result = _run_install({"L2G_VENV": str(venv)}, timeout=60)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""
