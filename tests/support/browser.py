"""Headless Chromium for page tests: Debian's ``chromium`` with ``--dump-dom``, console messages from its log."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium_path() -> str:
    """The chromium executable; skips the test with how to install it when there is none."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed: the browser test needs /usr/bin/chromium "
            "(apt-get install -y chromium; .ci/run installs it when apt-get can)"
        )
    return path


def dump_dom(chromium: str, url: str, profile: Path, *, timeout: float = 120) -> tuple[str, list[str]]:
    """The DOM of ``url`` after its scripts ran, and the console messages Chromium logged for it."""
    profile.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
