"""Pages as a person sees them: rendered by headless Chromium (Debian's `chromium`), reduced to
their visible text, or photographed at a given width into the test artifacts directory
(`$DB_EXPORTER_ARTIFACTS`, default `artifacts/` at the repository's root, not committed)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)"
)
ARTIFACTS = Path(
    os.environ.get("DB_EXPORTER_ARTIFACTS") or Path(__file__).resolve().parent.parent / "artifacts"
)


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--hide-scrollbars",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True, text=True, timeout=90, check=True,
        ).stdout  # fmt: skip


def rendered_dom(url: str) -> str:
    """The page's DOM after Chromium loaded it (and ran whatever scripts it would run)."""
    return _chromium("--dump-dom", url)


def visible_text(dom: str) -> str:
    body = re.sub(r"(?s)<(script|style|title)\b.*?</\1>", "", dom)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def rendered_text(url: str) -> str:
    """The page's DOM after Chromium rendered it, reduced to its visible text."""
    return visible_text(rendered_dom(url))


def artifact(name: str) -> Path:
    """Where the test artifact `name` goes (the directory made when missing)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def screenshot(url: str, name: str, width: int, height: int = 4000) -> Path:
    """A PNG of the page at `width` CSS pixels, as ARTIFACTS/`name`."""
    path = artifact(name)
    _chromium(f"--window-size={width},{height}", f"--screenshot={path}", url)
    assert path.stat().st_size > 0
    return path
