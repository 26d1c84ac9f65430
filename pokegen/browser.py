"""Debian's Chromium, headless, driven by Playwright (which cannot download its
own browser here): a fresh profile each time, no background traffic."""
from __future__ import annotations

import contextlib
import shutil
import tempfile

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium_page(*extra_flags: str):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pokegen-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS + list(extra_flags))
            try:
                page = context.new_page()
                errors = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda message: message.type == "error"
                        and errors.append(message.text))
                page.script_errors = errors
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
