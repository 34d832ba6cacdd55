"""Open a report in Debian's Chromium, headless, through playwright's Python API (no browser download).

``chromium_path()`` runs ``tests/report/browser.sh``, which installs the ``chromium`` package when it is
missing and fails loudly when it cannot: a test that needs the browser fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "report" / "browser.sh"
ARTIFACTS = ROOT / "work" / "test-artifacts"


def chromium_path() -> str:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=1200)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(
            f"Debian's chromium is needed for the report tests: {proc.stderr.strip()}\n"
            "install it with `make browser` (or `apt-get install chromium`)"
        )
    return proc.stdout.strip().splitlines()[-1]


@dataclass
class Opened:
    """What the page did in the browser."""

    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    bars: dict[str, int] = field(default_factory=dict)  # chart kind (data-kind) -> bars drawn
    lines: dict[str, int] = field(default_factory=dict)  # chart kind -> line traces drawn
    charts: int = 0
    screenshot: Path | None = None


def open_report(page_file: Path, screenshot: Path) -> Opened:
    """Load the page, wait until plotly drew every chart, count bars per chart, keep a screenshot (also
    copied to work/test-artifacts/)."""
    from playwright.sync_api import sync_playwright

    opened = Opened()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: opened.errors.append(str(e)))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.chart')].every("
                "c => c.querySelector('.main-svg') !== null)",
                timeout=60_000,
            )
            opened.charts = page.locator(".chart").count()
            for chart in page.locator(".chart").all():
                kind = str(chart.get_attribute("data-kind"))
                opened.bars[kind] = chart.locator(".barlayer .point").count()
                opened.lines[kind] = chart.locator(".scatterlayer .trace").count()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            opened.screenshot = screenshot
        finally:
            browser.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(screenshot, ARTIFACTS / screenshot.name)
    return opened
