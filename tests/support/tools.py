"""Command-line tools installed beside the test interpreter (cfn-lint, hadolint)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def installed_tool(name: str) -> str:
    """The path of console script ``name`` from this interpreter's environment, else PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        msg = f"{name} is not installed (it comes with the test extra: pip install -e '.[test]')"
        raise FileNotFoundError(msg)
    return found
