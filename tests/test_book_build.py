"""The book builds without a single warning, and every page renders in a real browser.

A thin wrapper around scripts/check_html.py (run it directly for the full table):
  1. `jupyter-book build . --all --warningiserror --nitpick --keep-going` exits 0, no WARNING;
  2. headless Chromium finds no unrendered math, missing image, error output or console error.
Needs Chromium and chromedriver from Debian: `bash scripts/setup_chromium.sh` (make test runs it).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK_HTML = ROOT / "scripts" / "check_html.py"

pytestmark = [pytest.mark.book, pytest.mark.browser]


def _check_html_module():
    spec = importlib.util.spec_from_file_location("check_html", CHECK_HTML)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_builds_warning_free_and_every_page_renders():
    check_html = _check_html_module()

    code, out = check_html.build_book(ROOT)
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert code == 0 and not warnings, (
        f"jupyter-book build failed (exit code {code}) or warned:\n"
        + "\n".join(warnings or out.splitlines()[-40:])
    )

    for exe in (check_html.CHROMIUM, check_html.CHROMEDRIVER):
        assert Path(exe).exists(), f"{exe} is missing: run `bash scripts/setup_chromium.sh`"
    proc = subprocess.run([sys.executable, str(CHECK_HTML), "--no-build"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "pages with problems:\n" + proc.stdout[-6000:] + proc.stderr[-2000:]
