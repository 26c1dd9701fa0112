"""Render report.html to a PNG with headless Chromium, to look at the page as a reader would.

Run: `python -m bench.report_render [REPORT_HTML] [--out PNG] [--width 1400] [--height 5000]`.
Without REPORT_HTML it writes the tests' fake full report (plots and page) to a temporary folder
and renders that. Needs Chromium (`apt-get install -y chromium`); exits non-zero without it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def fake_report_html(out_dir: Path) -> Path:
    """Write the tests' fake full report (plots and page) into `out_dir`; returns report.html."""
    from pipeline.html_report import write_html
    from pipeline.plots import write_plots
    from tests.test_report_render import fake_report

    report = fake_report()
    return write_html(report, out_dir, write_plots(report, out_dir))


def render(html_path: Path, png_path: Path, width: int, height: int, chromium: str) -> Path:
    """Screenshot `html_path` (top `height` pixels at `width`) into `png_path` with a throwaway profile."""
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            html_path.resolve().as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot at {png_path}")
    return png_path


def main(argv: list[str] | None = None) -> int:
    """Render the page and print where the PNG is and how big; 2 when Chromium is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, help="report.html to render (default: a fake report)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: next to the page, report.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=5000)
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        print("chromium not found; install it with: apt-get install -y chromium", file=sys.stderr)
        return 2
    html_path = args.html or fake_report_html(Path(tempfile.mkdtemp(prefix="report-render-")))
    if not html_path.is_file():
        print(f"no such file: {html_path}", file=sys.stderr)
        return 1
    png_path = render(
        html_path, (args.out or html_path.with_name("report.png")).resolve(), args.width, args.height, chromium
    )
    print(f"page: {html_path}")
    print(f"png:  {png_path} ({png_path.stat().st_size / 1024:.0f} KiB, {args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
