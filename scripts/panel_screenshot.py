"""Regenerate the panel screenshots in docs/: the demo tenant's users page (panel-users.png) and
its first number's 着信設定 with the weekly timeline (panel-incoming.png), signed in as its admin.

    .venv/bin/python scripts/panel_screenshot.py     # needs Debian's chromium and fonts-noto-cjk

Runs the server on loopback port 0 with a copy of config/tenants/acme.toml in a temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.integration.harness import running_server, write_config  # noqa: E402

NAME, PASSWORD = "acme-admin", "acme admin pass 2026"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="pbx-shot-"))
    try:
        tenant = (REPO / "config" / "tenants" / "acme.toml").read_text(encoding="utf-8")
        config = write_config(root, tenants={"acme": tenant})
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pbx",
                "panel",
                "add-admin",
                NAME,
                "--tenant",
                "acme",
                "--config",
                str(config),
            ],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            cwd=REPO,
        )
        with running_server(config) as server, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 620})
            base = f"http://{server.panel[0]}:{server.panel[1]}"
            page.goto(base + "/login")
            page.fill("input[name=name]", NAME)
            page.fill("input[name=password]", PASSWORD)
            page.get_by_role("button", name="ログイン").click()
            page.goto(base + "/t/acme/users")
            page.screenshot(path=str(REPO / "docs" / "panel-users.png"))
            page.set_viewport_size({"width": 1200, "height": 900})
            page.goto(base + "/t/acme/incoming/0312345678")
            page.screenshot(path=str(REPO / "docs" / "panel-incoming.png"))
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
