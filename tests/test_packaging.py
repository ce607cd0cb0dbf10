"""The wheel carries the templates and firmware sources, so an installed mcugen finds them."""

import shutil
import subprocess
import sys
import zipfile

from helpers import REPO


def test_wheel_contains_templates_and_firmware(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    for name in ("mcugen", "templates", "firmware"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    (wheel,) = tmp_path.glob("mcugen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "mcugen/templates/c/model.c.j2",
        "mcugen/templates/c/mcugen_kernels.c.j2",
        "mcugen/templates/host/host_main.c.j2",
        "mcugen/templates/firmware/main.c.j2",
        "mcugen/firmware_sources/common/mcugen_startup.c",
        "mcugen/firmware_sources/qemu_plugin/mcugen_icount.c",
    ):
        assert needed in names, needed
