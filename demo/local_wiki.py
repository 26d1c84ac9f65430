"""A small MediaWiki-like HTTP server on 127.0.0.1 that serves the SYNTHETIC demo
episodes at /wiki/<CODE>, so the real crawler can run offline and in tests.

    python -m demo.local_wiki --port 8080 --fault EP002=503-once --fault EP003=429-once
    python crawler_bulbapedia.py --base-url http://127.0.0.1:8080/wiki/ --delay 0.05

Missing pages answer 404 like MediaWiki. Faults can be injected per episode
(see FAULTS) to exercise retries, timeouts and bad responses.
"""
from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from demo.synthetic_episodes import SyntheticEpisode, generate_episodes, load_episodes
from demo.wiki_markup import (
    MARKUPS,
    PageFeatures,
    markup_for,
    render_episode_page,
    render_main_page,
    render_missing_page,
)
from pokegen.episode_codes import default_codes

FAULTS = {
    "503-once": "answer 503 Service Unavailable to the first request",
    "503-always": "answer 503 to every request",
    "429-once": "answer 429 Too Many Requests with Retry-After to the first request",
    "slow-once": "wait --slow-seconds before answering the first request",
    "slow-always": "wait --slow-seconds before answering every request",
    "reset-once": "reset the connection (TCP RST) on the first request",
    "reset-always": "reset the connection on every request",
    "truncated": "announce the full Content-Length, send half the page, close",
    "truncated-unframed": "send half the page without Content-Length, close",
    "non-utf8": "UTF-8 page with 'é' and '’' written in Windows-1252 bytes",
    "huge": "announce a 64 MiB page and start sending it",
    "endless": "send a chunked page that never ends",
    "trickle": "send the page one byte every --slow-seconds / 10, each well within any timeout",
    "redirect-once": "redirect the first request to the same page on this wiki (302)",
    "offsite-redirect-always": "redirect every request to another host (localhost instead of "
                               "127.0.0.1): /offsite/<CODE>",
    "double-plot": "page with two 'Episode plot' sections",
    "no-plot": "page without a plot section",
    "plot-heading": "plot section titled 'Plot' instead of 'Episode plot'",
}
HUGE_BYTES = 64 * 2**20
ENDLESS_LIMIT_SECONDS = 120   # a safety stop if a client reads forever
FILLER = b"<!-- " + b"filler " * 9000 + b"-->\n"


class LocalWiki:
    """The server, run in a background thread: `with LocalWiki(episodes) as wiki: wiki.url`."""

    def __init__(self, episodes: dict[str, SyntheticEpisode], *, port: int = 0,
                 markup: str = "mixed", features: str = "varied",
                 faults: dict[str, str] | None = None, slow_seconds: float = 5.0,
                 retry_after: int = 1):
        if markup not in MARKUPS + ("mixed",):
            raise ValueError(f"markup must be legacy, modern or mixed, not {markup!r}")
        if features not in ("varied", "all"):
            raise ValueError(f"features must be varied or all, not {features!r}")
        for code, fault in (faults or {}).items():
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r} for {code}; known: {', '.join(FAULTS)}")
        self.episodes = episodes
        self.markup, self.features = markup, features
        self.faults = dict(faults or {})
        self.slow_seconds, self.retry_after = slow_seconds, retry_after
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self.log: list[tuple[str, str]] = []       # (path, what was answered)
        self.user_agents: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.wiki = self
        self._thread: threading.Thread | None = None
        self.stopped = False

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wiki/"

    def start(self) -> "LocalWiki":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="local-wiki")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True   # open keep-alive connections get no more answers either
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LocalWiki":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def requests_for(self, code: str) -> int:
        with self._lock:
            return self._counts.get(code, 0)

    def _attempt(self, code: str) -> int:
        with self._lock:
            self._counts[code] = self._counts.get(code, 0) + 1
            return self._counts[code]

    def _record(self, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append((path, outcome))

    def page_features(self, code: str, fault: str | None) -> PageFeatures:
        features = PageFeatures() if self.features == "all" else PageFeatures.varied(code)
        if fault == "double-plot":
            features.duplicate_plot = True
        elif fault == "no-plot":
            features.plot_title = ""
        elif fault == "plot-heading":
            features.plot_title = "Plot"
        return features


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pokegen-demo-wiki/1.0"
    timeout = 15   # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True   # headers and body are separate writes: no delayed-ACK stall

    @property
    def wiki(self) -> LocalWiki:
        return self.server.wiki

    def log_message(self, format, *args) -> None:   # quiet: the wiki keeps its own log
        pass

    def do_GET(self) -> None:
        if self.wiki.stopped:
            self.close_connection = True
            return
        path = unquote(urlsplit(self.path).path)
        self.wiki.user_agents.add(self.headers.get("User-Agent", ""))
        try:
            self._answer(path)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True   # the client gave up (timeout, size cap)

    def _answer(self, path: str) -> None:
        if path in ("/", "/wiki", "/wiki/", "/wiki/Main_Page"):
            return self._send(200, render_main_page(sorted(self.wiki.episodes)).encode(), path)
        if not path.startswith("/wiki/"):
            return self._send(404, b"Not found\n", path, "text/plain; charset=UTF-8")
        code = path[len("/wiki/"):]
        fault = self.wiki.faults.get(code)
        attempt = self.wiki._attempt(code)
        if fault and (fault.endswith("-always") or (fault.endswith("-once") and attempt == 1)):
            if self._transport_fault(fault, path):
                return
        episode = self.wiki.episodes.get(code)
        if episode is None:
            return self._send(404, render_missing_page(code).encode(), path)
        markup = markup_for(code, self.wiki.markup)
        html = render_episode_page(episode, markup, self.wiki.page_features(code, fault))
        body = html.encode("utf-8")
        if fault == "non-utf8":
            for char in ("é", "’"):
                body = body.replace(char.encode("utf-8"), char.encode("cp1252"))
        if fault in ("truncated", "truncated-unframed", "huge", "endless", "trickle"):
            return self._body_fault(fault, body, path)
        self._send(200, body, path)

    def _transport_fault(self, fault: str, path: str) -> bool:
        """Faults before any page is sent; False when the page should follow."""
        kind = fault.rsplit("-", 1)[0]
        if kind == "503":
            self._send(503, b"Service temporarily unavailable\n", path, "text/plain; charset=UTF-8")
        elif kind == "429":
            self._send(429, b"Too many requests\n", path, "text/plain; charset=UTF-8",
                       {"Retry-After": str(self.wiki.retry_after)})
        elif kind == "slow":
            self.wiki._record(path, "slow")
            time.sleep(self.wiki.slow_seconds)
            return False
        elif kind == "redirect":
            self._send(302, b"", path, headers={"Location": path})
        elif kind == "offsite-redirect":
            code = path[len("/wiki/"):]
            self._send(302, b"", path, headers={
                "Location": f"http://localhost:{self.server.server_address[1]}/offsite/{code}"})
        elif kind == "reset":
            self.wiki._record(path, "reset")
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            # (rfile holds the socket open until it is closed too; wfile does not.)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
            self.close_connection = True
        return True

    def _body_fault(self, fault: str, body: bytes, path: str) -> None:
        self.wiki._record(path, fault)
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        if fault in ("truncated", "trickle"):
            self.send_header("Content-Length", str(len(body)))
        elif fault == "huge":
            self.send_header("Content-Length", str(HUGE_BYTES))
        elif fault == "endless":
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        if fault in ("truncated", "truncated-unframed"):
            self.wfile.write(body[: len(body) // 2])
        elif fault == "trickle":
            for byte in range(len(body)):
                self.wfile.write(body[byte:byte + 1])
                self.wfile.flush()
                time.sleep(self.wiki.slow_seconds / 10)
        elif fault == "huge":
            sent = 0
            while sent < HUGE_BYTES:
                chunk = FILLER[: HUGE_BYTES - sent]
                self.wfile.write(chunk)
                sent += len(chunk)
        else:
            start = time.monotonic()
            self._chunk(body[: len(body) // 2])
            while time.monotonic() - start < ENDLESS_LIMIT_SECONDS:
                self._chunk(FILLER)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send(self, status: int, body: bytes, path: str,
              content_type: str = "text/html; charset=UTF-8", headers: dict | None = None) -> None:
        self.wiki._record(path, str(status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def parse_fault(text: str) -> tuple[str, str]:
    code, sep, fault = text.partition("=")
    if not sep or fault not in FAULTS:
        raise argparse.ArgumentTypeError(
            f"expected CODE=FAULT with FAULT one of: {', '.join(FAULTS)}")
    return code.strip().upper(), fault


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Serve the SYNTHETIC demo episodes as a MediaWiki-like site on 127.0.0.1.",
        epilog="faults: " + "; ".join(f"{name}: {text}" for name, text in FAULTS.items()))
    parser.add_argument("--episodes", type=Path,
                        help="episodes file from demo.synthetic_episodes "
                             "(default: generate the crawler's default codes in memory)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--markup", choices=MARKUPS + ("mixed",), default="mixed",
                        help="page markup (default: %(default)s, about half each)")
    parser.add_argument("--features", choices=("varied", "all"), default="varied",
                        help="page furniture per page: a varied mix, or all of it everywhere")
    parser.add_argument("--fault", type=parse_fault, action="append", default=[],
                        metavar="CODE=FAULT", help="inject a fault for one episode (repeatable)")
    parser.add_argument("--slow-seconds", type=float, default=5.0,
                        help="delay of the slow faults (default: %(default)s)")
    parser.add_argument("--retry-after", type=int, default=1,
                        help="Retry-After seconds sent with 429 (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.episodes:
        try:
            episodes = load_episodes(args.episodes)
        except (OSError, ValueError, TypeError) as exc:
            print(f"error: cannot read episodes from {args.episodes}: {exc}", file=sys.stderr)
            return 1
    else:
        episodes = {e.code: e for e in generate_episodes(default_codes())}
    try:
        wiki = LocalWiki(episodes, port=args.port, markup=args.markup, features=args.features,
                         faults=dict(args.fault), slow_seconds=args.slow_seconds,
                         retry_after=args.retry_after)
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"serving {len(episodes)} synthetic episodes at {wiki.url} (Ctrl-C to stop)", flush=True)
    # SIGTERM (kill, a process manager) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    wiki.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        wiki.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
