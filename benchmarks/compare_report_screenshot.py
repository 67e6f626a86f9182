"""Open a `refine compare` HTML report in headless Chromium: no console errors, tables and grid shown.

Usage:
    python benchmarks/compare_report_screenshot.py                      # toy comparison, seconds
    python benchmarks/compare_report_screenshot.py --report runs/compare/shapes/report.html
    python benchmarks/compare_report_screenshot.py --config compare/shapes limit=8

Needs Chromium (Debian: `apt-get install -y chromium`, binary /usr/bin/chromium); installs nothing.
Checks, and exits 1 if any fails:
1. Chromium renders the page (`--dump-dom`) without console errors (`--enable-logging=stderr`);
2. the rendered DOM holds the summary table (one row per entry) and the image grid (one row
   per sampled case, one image per column), every image being an inlined data URI;
3. the full-page screenshot is not blank: enough non-background pixels and enough distinct
   colours (the charts and the grid images), in both the top (tables) and lower (grid) halves.
Prints the figures and the screenshot path.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.rows: dict[str, int] = {}
        self.grid_images = 0
        self.images = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.stack.append(attrs.get("id", ""))
        if tag == "tr" and self.stack:
            self.rows[self.stack[-1]] = self.rows.get(self.stack[-1], 0) + 1
        if tag == "img":
            self.images += 1
            if self.stack and self.stack[-1] == "grid":
                self.grid_images += 1
            src = attrs.get("src", "")
            if not src.startswith("data:image/png;base64,"):
                self.external.append(src[:80])
        if tag in ("script", "link") or (tag == "a" and "href" in attrs):
            self.external.append(f"<{tag}>")

    def handle_endtag(self, tag):
        if tag == "table" and self.stack:
            self.stack.pop()


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: apt-get install -y chromium (this script installs nothing)")


def render(report: Path, out_png: Path, width: int = 1400, height: int = 3000) -> tuple[str, str]:
    """(DOM after rendering, Chromium's stderr) and a screenshot written to `out_png`."""
    binary = chromium()
    with tempfile.TemporaryDirectory() as profile:
        common = [binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        dom = subprocess.run([*common, "--dump-dom", report.resolve().as_uri()], capture_output=True, text=True, timeout=120)
        shot = subprocess.run(
            [*common, f"--screenshot={out_png}", f"--window-size={width},{height}", report.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    if dom.returncode != 0 or shot.returncode != 0 or not out_png.is_file():
        sys.exit(f"chromium failed (exit {dom.returncode}/{shot.returncode}):\n{dom.stderr[-2000:]}\n{shot.stderr[-2000:]}")
    return dom.stdout, dom.stderr + shot.stderr


def console_errors(log: str) -> list[str]:
    """Page errors Chromium logs (uncaught exceptions, failed loads); its own startup noise is ignored."""
    patterns = ("CONSOLE", "Uncaught", "Failed to load", "net::ERR_")
    return [line for line in log.splitlines() if any(p in line for p in patterns)]


def blankness(png: Path) -> dict[str, float]:
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)  # (H, W, 3)
    ink = (np.abs(pixels - pixels[0, 0]).max(-1) > 16)  # differs from the page background
    rows = ink.any(1).nonzero()[0]
    content = pixels[: rows.max() + 1] if rows.size else pixels
    half = len(content) // 2
    colours = len(np.unique(content.reshape(-1, 3), axis=0))
    return {
        "ink_fraction": float(ink.mean()),
        "ink_top": float(ink[:half].mean()),
        "ink_bottom": float(ink[half : len(content)].mean()),
        "distinct_colours": float(colours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="an existing report.html (default: run a comparison first)")
    parser.add_argument("--config", help="compare config or preset to run (default: the toy world)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for --config")
    parser.add_argument("--out", type=Path, default=Path("runs/compare-screenshot"))
    args = parser.parse_args()

    from rich.console import Console

    console = Console()
    entries = None
    if args.report is None:
        from refine.compare import run_compare
        from refine.testing.compare_fakes import toy_config

        config = args.config or toy_config(args.out / "toy", cases=12)
        run = run_compare(config, args.overrides, console=console)
        args.report = run.files["html"]
        entries = [r.entry for r in run.summary if r.category == "all"]

    png = args.report.with_name("report-screenshot.png")
    dom, log = render(args.report, png)
    parsed = _Dom()
    parsed.feed(dom)
    errors = console_errors(log)
    figures = blankness(png)
    summary_rows = parsed.rows.get("summary", 0) - 1  # minus the header row
    grid_rows = parsed.rows.get("grid", 0) - 1
    print(f"report:      {args.report}")
    print(f"screenshot:  {png}")
    print(f"console errors: {len(errors)}  external references: {len(parsed.external)}")
    print(f"summary rows: {summary_rows}  grid rows: {grid_rows}  grid images: {parsed.grid_images}  images: {parsed.images}")
    print("screenshot: " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    failures = []
    if errors:
        failures.append("console errors:\n  " + "\n  ".join(errors[:10]))
    if parsed.external:
        failures.append(f"non-inlined references: {parsed.external[:5]}")
    if summary_rows < 1 or (entries is not None and summary_rows != len(entries)):
        failures.append(f"summary table has {summary_rows} rows, expected {len(entries) if entries else '>= 1'}")
    if grid_rows < 1 or parsed.grid_images < 2 * grid_rows:
        failures.append(f"image grid has {grid_rows} rows and {parsed.grid_images} images")
    if figures["ink_fraction"] < 0.02 or figures["ink_top"] < 0.01 or figures["ink_bottom"] < 0.01 or figures["distinct_colours"] < 50:
        failures.append(f"screenshot looks blank: {figures}")
    if not re.search(r"<h1>refine compare", dom):
        failures.append("title missing from the rendered page")
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("ok: the report renders in headless Chromium with its tables, charts and grid")


if __name__ == "__main__":
    main()
