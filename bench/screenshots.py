"""Screenshots of report.html pages in headless Chromium, for docs/ (README shows the demo's).

Usage (from the repo root, after `make install browser` and a trained experiment):
    .venv/bin/python bench/screenshots.py experiments/demo docs/report-demo.png [--height 1800] [--click CLASS]

`--click CLASS` clicks the class's link in the per-class table first, so the shot shows what the model
wrongly calls that class.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--click", default=None)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size=1150,{args.height}",
    ):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((args.experiment / "report.html").resolve().as_uri())
        if args.click:
            row = driver.find_element(By.CSS_SELECTOR, f'#per-class tr[data-class="{args.click}"] a')
            row.click()
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
