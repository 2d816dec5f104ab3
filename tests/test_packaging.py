"""The installed package, as `pip install .` leaves it: one import package of our own
(`rolebroker`), nothing at generic top-level names other distributions use, and a console
script that runs from the wheel."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from rolebroker.broker import __version__

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return next(out.glob("rolebroker-*.whl"))


def test_the_wheel_holds_one_import_package_of_our_own(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"rolebroker", f"rolebroker-{__version__}.dist-info"}, top
    assert "rolebroker/broker/server.py" in names and "rolebroker/clients/cli.py" in names
    assert not [n for n in names if n.startswith(("broker/", "clients/", "tests/"))]


def test_the_installed_console_script_runs_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    # Without its dependencies: the CLI's own paths are standard library only.
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    assert not (Path(site) / "broker").exists() and not (Path(site) / "clients").exists()
    version = subprocess.run([str(environment / "bin" / "rolebroker"), "--version"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"rolebroker {__version__}"
    # A distribution named `broker` installed beside it keeps its own import name.
    (Path(site) / "broker").mkdir()
    (Path(site) / "broker" / "__init__.py").write_text("OTHER = True\n")
    both = subprocess.run([str(python), "-c", "import broker, rolebroker.clients.cli; print(broker.OTHER)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert both.stdout.strip() == "True", both.stderr
