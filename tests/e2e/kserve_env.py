"""A virtualenv holding KServe's SDK (``.venv-kserve``), made once from tests/e2e/kserve/requirements.txt.

``python -m tests.e2e.kserve_env`` makes it ahead of the tests (scripts/test.sh does); the tests make it if it is
missing. It is remade when the requirements file changes (its content is stamped into the virtualenv).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "tests" / "e2e" / "kserve" / "requirements.txt"
LOCATION = ROOT / ".venv-kserve"
PROBE = ROOT / "tests" / "e2e" / "kserve" / "probe.py"


def kserve_python(location: Path = LOCATION) -> Path:
    """The virtualenv's interpreter, after making (or remaking) the virtualenv if needed."""
    python, stamp = location / "bin" / "python", location / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if location.is_symlink() or location.is_file():
        location.unlink()  # a stale link or file where the virtualenv belongs: venv cannot clear it
    venv.create(location, with_pip=True, clear=True)
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    subprocess.run(install, check=True)
    stamp.write_text(wanted)
    return python


if __name__ == "__main__":
    print(kserve_python(Path(sys.argv[1]) if len(sys.argv) > 1 else LOCATION))
