#!/usr/bin/env python3
"""One entry point for people and CI: `python3 dev.py demo` or `python3 dev.py test`.

On first use (and whenever pyproject.toml changes) it creates `.venv` beside this file and
installs the project with its development extras, so a fresh machine needs nothing but Python.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".dev-installed"

USAGE = """usage: python3 dev.py demo [--listen HOST:PORT] [--workers N]
                                   run the demo (embedded PostgreSQL)
       python3 dev.py test [PYTEST ARGS]  lint, type-check and run the test suite"""


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing db-exporter and its development tools", file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in (["--upgrade", "pip"], ["--editable", f"{ROOT}[dev]"]):
        if subprocess.run([*pip, *args]).returncode != 0:
            sys.exit(f"dev.py: 'pip install {' '.join(args)}' failed (see above)")
    STAMP.write_text(wanted)


def run(*cmd: str) -> None:
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(result.returncode)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"demo", "test"}:
        sys.exit(USAGE)
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        os.execv(str(BIN / "db-exporter"), [str(BIN / "db-exporter"), "demo", *rest])
    run(str(BIN / "ruff"), "check", ".")
    run(str(BIN / "ruff"), "format", "--check", ".")
    # exporter/demo/models is the top-level models/: checked once, under the name it runs as.
    run(str(BIN / "mypy"), "exporter")
    run(str(BIN / "pytest"), *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
