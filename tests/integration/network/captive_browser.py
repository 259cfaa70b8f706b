"""Run INSIDE a phone's namespace (`ip netns exec <phone> python captive_browser.py OUT`): a
phone-sized Chromium opens the iOS probe URL as a captive sheet does, follows the redirect to
the terms, accepts, and loads the probe again. Prints one JSON object; screenshots go to OUT."""

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = "http://captive.apple.com/hotspot-detect.html"
IOS_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148")


def main(out: Path) -> None:
    report: dict[str, object] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, device_scale_factor=2, user_agent=IOS_SAFARI,
                                java_script_enabled=False)
        page.goto(PROBE, timeout=10_000)
        report["terms_url"] = page.url
        report["terms_title"] = page.title()
        button = page.locator("button.accept")
        box = button.bounding_box()
        report["button"] = box
        page.screenshot(path=str(out / "terms.png"), full_page=True)
        with page.expect_navigation(timeout=10_000):
            button.click()
        report["done_url"] = page.url
        page.screenshot(path=str(out / "done.png"), full_page=True)
        report["done_html"] = page.content()
        page.goto(PROBE, timeout=10_000)
        report["probe_after"] = page.content()
        browser.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
