"""Lines of a test file found by a marker comment, so tests do not hard-code line numbers."""

from __future__ import annotations

import os
from pathlib import Path


def line_of(file: str, marker: str) -> int:
    """The line of `file` that ends with the comment `# marker`."""
    for number, line in enumerate(Path(file).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(marker)


def shown_path(file: str) -> str:
    """`file` as call sites show it by default: relative to the working directory."""
    return os.path.relpath(file)
