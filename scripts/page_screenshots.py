"""Screenshots of the page before and after it writes an episode: starts the
real stack (scripts/serve.sh: uWSGI + nginx on a free 127.0.0.1 port) on a
checkpoint, opens the page in headless Chromium and saves two PNGs.

Usage: python scripts/page_screenshots.py [--checkpoint-dir checkpoint] [--run-name run1]
                                          [--out-dir docs]
"""
import argparse
import os
import sys

from pokegen.browser import chromium_page
from pokegen.service_stack import ServiceStack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PREFIX = "Ash and Pikachu arrive in a new town, where"
SEED = 2024
LENGTH = 160


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", default=os.path.join(ROOT, "checkpoint"))
    parser.add_argument("--run-name", default="run1")
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.checkpoint_dir, args.run_name, "checkpoint")):
        print(f"error: no checkpoint in {os.path.join(args.checkpoint_dir, args.run_name)} "
              f"(make model builds the demo model)", file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)

    stack = ServiceStack(CHECKPOINT_DIR=os.path.abspath(args.checkpoint_dir),
                         RUN_NAME=args.run_name).start()
    try:
        with chromium_page() as page:
            page.set_viewport_size({"width": 900, "height": 900})
            page.goto(stack.url + "/")
            page.fill("#prefix", PREFIX)
            page.fill("#length", str(LENGTH))
            page.fill("#seed", str(SEED))
            save(page, os.path.join(args.out_dir, "page-before.png"))
            page.click("#generate")
            page.wait_for_selector("#generate-form[data-state=done]", timeout=120_000)
            save(page, os.path.join(args.out_dir, "page-after.png"))
            if page.script_errors:
                print(f"error: the page reported {page.script_errors}", file=sys.stderr)
                return 1
    finally:
        stack.stop()
    return 0


def save(page, path: str) -> None:
    page.screenshot(path=path, full_page=True)
    print(path)


if __name__ == "__main__":
    sys.exit(main())
