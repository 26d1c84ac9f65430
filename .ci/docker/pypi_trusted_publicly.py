"""Tells whether PyPI can be reached and verified with the public certificate authorities only.

A container starts with Debian's public CA set and no pip configuration of this host. When this
host reaches PyPI only through its own certificates (a TLS-inspecting proxy) or not at all, an
image build cannot install packages by itself, and the host downloads them first
(fetch-wheels.sh beside this script). Exit 0: builds can use PyPI; 1: they cannot.

Usage: python3 pypi_trusted_publicly.py [--url URL] [--timeout SECONDS]
"""
import argparse
import ssl
import sys
import urllib.error
import urllib.request

import certifi


def reachable(url: str, timeout: float) -> tuple[bool, str]:
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return False, str(getattr(error, "reason", error))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="https://pypi.org/simple/pip/", help="what to fetch")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    args = parser.parse_args()
    ok, detail = reachable(args.url, args.timeout)
    print(f"{args.url}: {'reachable' if ok else 'not reachable'} with public CAs ({detail})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
