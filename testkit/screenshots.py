"""The README's dashboard screenshots, from a running dashboard (e.g. `make demo PINOT=1`'s).

    python -m testkit.screenshots --portal-link 'http://127.0.0.1:8501/?token=…' [--out docs/img]

Opens the ops, product and consumer views in headless Chromium (testkit/browser.py), waits until
each has rendered its last panel, and saves ``dashboard-<view>.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from testkit.browser import chromium, open_until, screenshot

REPO = Path(__file__).resolve().parent.parent
# Each view's last panel: once it shows, the page has rendered top to bottom.
VIEWS = {
    "ops": ("?view=ops", ("API usage: ops", "Pipeline health", "Actions taken")),
    "product": ("?view=product", ("API usage: product", "Country distribution")),
}
CONSUMER_DONE = ("Quota, bill and balance", "Estimate so far")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.screenshots", description=__doc__)
    parser.add_argument("--portal-link", required=True, help="a consumer's portal link")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per view")
    args = parser.parse_args(argv)
    parts = urlsplit(args.portal_link)
    base = f"{parts.scheme}://{parts.netloc}/"
    with chromium((1400, 1800)) as driver:
        for name, (query, done) in VIEWS.items():
            open_until(driver, base + query, done, args.timeout)
            print(screenshot(driver, args.out / f"dashboard-{name}.png"))
        open_until(driver, args.portal_link, CONSUMER_DONE, args.timeout)
        print(screenshot(driver, args.out / "dashboard-consumer.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
