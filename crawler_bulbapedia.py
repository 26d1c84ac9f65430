"""Crawl the "Episode plot" section of Pokémon anime episode pages from Bulbapedia
(or any MediaWiki `/wiki/` root) into one text file per episode.

    python crawler_bulbapedia.py                        # EP001-EP274, AG, DP, XY, SM
    python crawler_bulbapedia.py --episodes EP001,AG005 --out /tmp/plots

Each plot goes to OUT/<CODE>.txt (paragraphs separated by one blank line) and
every attempt is recorded in OUT/manifest.jsonl. Saved episodes are skipped on
the next run unless --force, so an interrupted crawl resumes where it stopped.
Bulbapedia is a community wiki: keep the delay between requests at 1 s or more.
"""
from __future__ import annotations

import argparse
import codecs
import email.message
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests
from bs4 import BeautifulSoup, Tag
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from pokegen.atomic_files import atomic_write_text
from pokegen.episode_codes import CodeError, default_codes, parse_episode_list, parse_series

DEFAULT_BASE_URL = "https://bulbapedia.bulbagarden.net/wiki/"
DEFAULT_OUT = Path("data/pokeCorpusBulba")
PROJECT_URL = "https://github.com/pokegen/pokegen"
MANIFEST_NAME = "manifest.jsonl"

# Headings that open the plot section, tried in this order.
PLOT_HEADINGS = ("Episode plot", "Plot")
HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# Blocks inside the section that are not narrative.
SKIPPED_TAGS = {"table", "figure", "ul", "ol", "dl", "style", "script", "link", "meta", "noscript"}
SKIPPED_CLASSES = {
    "thumb", "thumbinner", "thumbcaption", "gallery", "gallerybox", "gallerytext",
    "hatnote", "dablink", "rellink", "toc", "mw-editsection", "navbox", "infobox",
    "notice", "ambox", "mbox", "metadata", "noprint", "reference", "references",
    "reflist", "mw-empty-elt",
}
# Inline elements removed from paragraphs: reference marks, edit links.
INLINE_NOISE = ["sup.reference", ".mw-editsection", ".noprint", "style", "script"]

# A crawl stops when this many episodes in a row could not even connect.
MAX_CONNECT_FAILURES_IN_A_ROW = 3


# --------------------------------------------------------------------------- fetching

@dataclass
class FetchSettings:
    timeout: float = 30.0          # seconds to connect, and to wait for each read
    retries: int = 4               # on connection errors, timeouts, 429 and 5xx
    backoff: float = 1.0           # urllib3 backoff factor: waits 0, 2, 4, 8 s ...
    max_bytes: int = 8 * 2**20     # a Bulbapedia episode page is a few hundred KB
    max_retry_after: int = 600     # never wait longer than this for Retry-After
    contact: str = PROJECT_URL
    page_seconds: float | None = None  # for a whole page; None: max(60, 4 x timeout)

    @property
    def user_agent(self) -> str:
        return f"pokegen-crawler/1.0 (+{self.contact}; episode plots for a GPT-2 corpus)"

    @property
    def page_deadline(self) -> float:
        # Bounds a body that trickles in just under the read timeout forever.
        return self.page_seconds or max(60.0, 4 * self.timeout)


class FetchError(Exception):
    """A page that could not be fetched; `connect` when the server was never reached."""

    def __init__(self, reason: str, http_status: int | None = None, connect: bool = False):
        super().__init__(reason)
        self.http_status = http_status
        self.connect = connect


@dataclass
class FetchedPage:
    http_status: int
    html: str | None       # None for a missing page (404)
    retries: int = 0


def make_session(settings: FetchSettings) -> requests.Session:
    retry = Retry(
        total=settings.retries,
        backoff_factor=settings.backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        retry_after_max=settings.max_retry_after,
        raise_on_status=False,  # the last 5xx comes back as a response we can record
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = settings.user_agent
    return session


REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


def fetch_page(session: requests.Session, url: str, settings: FetchSettings) -> FetchedPage:
    response = get_within_host(session, url, settings)
    with response:
        retries = len(getattr(response.raw.retries, "history", ()) or ())
        if response.status_code == 404:
            return FetchedPage(404, None, retries)
        if response.status_code != 200:
            after = f" after {retries} retries" if retries else ""
            raise FetchError(f"HTTP {response.status_code}{after}", response.status_code)
        body = read_capped(response, settings)
        html = decode_html(body, response.headers.get("Content-Type", ""))
    if "</html>" not in html[-4096:].lower():
        # MediaWiki always closes the document; a missing end means a cut-off body.
        raise FetchError("truncated page (no closing </html>)", 200)
    return FetchedPage(200, html, retries)


def get_within_host(session: requests.Session, url: str,
                    settings: FetchSettings) -> requests.Response:
    """GET that follows redirects (a renamed page) only on the wiki's own
    scheme, host and port: a redirect elsewhere is a failure, never fetched."""
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = session.get(url, timeout=(settings.timeout, settings.timeout), stream=True,
                                   allow_redirects=False)
        except requests.RequestException as exc:
            raise FetchError(describe_network_error(exc), connect=is_connect_failure(exc)) from None
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return response
        response.close()
        url = urljoin(url, location)
        if urlsplit(url)[:2] != origin:
            raise FetchError(f"redirect to another site refused: {urlsplit(url).netloc or url}",
                             response.status_code)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects", response.status_code)


def read_capped(response: requests.Response, settings: FetchSettings) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > settings.max_bytes:
        raise FetchError(f"page too large ({int(declared)} bytes > {settings.max_bytes})", 200)
    too_slow = FetchError(f"page took longer than {settings.page_deadline:g} s", 200)
    # Each read waits at most the timeout, but a body trickled in a byte at a
    # time never makes one wait that long: at the deadline the connection is
    # shut, which ends the read in progress.
    shut = threading.Event()
    cut = threading.Timer(settings.page_deadline, _shut, (response, shut))
    cut.daemon = True
    cut.start()
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > settings.max_bytes:
                raise FetchError(f"page larger than {settings.max_bytes} bytes", 200)
            chunks.append(chunk)
    except requests.RequestException as exc:
        if shut.is_set():
            raise too_slow from None
        raise FetchError(f"incomplete page: {describe_network_error(exc)}", 200) from None
    finally:
        cut.cancel()
    if shut.is_set():  # a body without framing just ends where the cut came
        raise too_slow
    return b"".join(chunks)


def _shut(response: requests.Response, shut: threading.Event) -> None:
    shut.set()
    # urllib3 hands the socket to http.client's response, which reads it
    # through a file: HTTPResponse -> BufferedReader -> SocketIO -> socket.
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the read has ended anyway


def decode_html(body: bytes, content_type: str) -> str:
    header = email.message.Message()
    header["Content-Type"] = content_type or "text/html"
    charset = (header.get_param("charset") or "utf-8").lower()
    if charset in ("utf-8", "utf8"):
        return body.decode("utf-8", errors=_CP1252_FALLBACK)
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _decode_as_cp1252(error: UnicodeDecodeError) -> tuple[str, int]:
    """Bytes that are not UTF-8 in a UTF-8 page are nearly always Windows-1252
    (pasted smart quotes, a Latin-1 'é'): read them as such instead of losing them."""
    bad = error.object[error.start:error.end]
    return bad.decode("cp1252", errors="replace"), error.end


_CP1252_FALLBACK = "pokegen-cp1252-fallback"
codecs.register_error(_CP1252_FALLBACK, _decode_as_cp1252)


def is_connect_failure(exc: BaseException) -> bool:
    """True when no connection was made at all (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # NameResolutionError (DNS) is a NewConnectionError.
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def describe_network_error(exc: BaseException) -> str:
    """A short reason instead of urllib3's nested exception text."""
    text = str(exc)
    for needle, reason in (
        ("Name or service not known", "host not found"),
        ("NameResolutionError", "host not found"),
        ("nodename nor servname", "host not found"),
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset by server"),
        ("RemoteDisconnected", "server closed the connection"),
        ("IncompleteRead", "connection closed before the end of the page"),
        ("Read timed out", "timed out waiting for the server"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


# --------------------------------------------------------------------------- parsing

def plot_paragraphs(html: str) -> list[str] | None:
    """The narrative of the plot section, one string per paragraph; None if the
    page has no plot heading. Only headings are trusted, never positions."""
    soup = BeautifulSoup(html, "lxml")
    root = soup.select_one(".mw-parser-output") or soup.select_one("#mw-content-text") or soup
    heading = find_plot_heading(root)
    if heading is None:
        return None
    block = heading_block(heading)
    level = int(heading.name[1])
    paragraphs: list[str] = []
    for sibling in block.next_siblings:
        if not isinstance(sibling, Tag):
            continue
        sibling_level = heading_level(sibling)
        if sibling_level is not None:
            if sibling_level <= level:
                break      # the next section ("Major events", usually)
            continue       # a sub-heading: drop the title, keep its paragraphs
        if sibling.name == "section" and _opens_section_at(sibling, level):
            break
        paragraphs.extend(narrative_blocks(sibling))
    return paragraphs


def find_plot_heading(root: Tag) -> Tag | None:
    headings = root.find_all(HEADING_TAGS)
    for title in PLOT_HEADINGS:
        for heading in headings:
            if _heading_is(heading, title):
                return heading
    return None


def _heading_is(heading: Tag, title: str) -> bool:
    anchor = title.replace(" ", "_")
    headline = heading.find(class_="mw-headline")
    ids = {heading.get("id"), headline.get("id") if headline else None}
    if anchor in ids:
        return True
    text = (headline or heading).get_text(" ", strip=True)
    if headline is None:
        edit = heading.find(class_="mw-editsection")
        if edit is not None:
            text = text.replace(edit.get_text(" ", strip=True), "").strip()
    return " ".join(text.split()).casefold() == title.casefold()


def heading_block(heading: Tag) -> Tag:
    """MediaWiki 1.43+ wraps each heading in <div class="mw-heading">; the
    section's content are the siblings of that wrapper."""
    parent = heading.parent
    if isinstance(parent, Tag) and "mw-heading" in (parent.get("class") or []):
        return parent
    return heading


def heading_level(tag: Tag) -> int | None:
    if tag.name in HEADING_TAGS:
        return int(tag.name[1])
    if tag.name == "div" and "mw-heading" in (tag.get("class") or []):
        inner = tag.find(HEADING_TAGS)
        return int(inner.name[1]) if inner else None
    return None


def _opens_section_at(section: Tag, level: int) -> bool:
    """Parsoid output wraps sections in <section>: does this one start a section
    at `level` or above?"""
    first = section.find(HEADING_TAGS)
    return first is not None and int(first.name[1]) <= level


def narrative_blocks(element: Tag) -> list[str]:
    if _is_skipped(element):
        return []
    if element.name == "p":
        text = inline_text(element)
        return [text] if text else []
    if element.name == "blockquote":
        parts = [inline_text(p) for p in element.find_all("p")] or [inline_text(element)]
        text = " ".join(part for part in parts if part)
        return [text] if text else []
    if element.name in ("div", "section"):
        blocks: list[str] = []
        for child in element.children:
            if isinstance(child, Tag) and heading_level(child) is None:
                blocks.extend(narrative_blocks(child))
        return blocks
    return []


def _is_skipped(element: Tag) -> bool:
    if element.name in SKIPPED_TAGS or element.get("id") == "toc":
        return True
    return bool(SKIPPED_CLASSES.intersection(element.get("class") or []))


def inline_text(element: Tag) -> str:
    for noise in element.select(", ".join(INLINE_NOISE)):
        noise.decompose()
    for br in element.find_all("br"):
        br.replace_with(" ")
    return " ".join(element.get_text().split())


# --------------------------------------------------------------------------- crawling

@dataclass
class EpisodeResult:
    code: str
    url: str
    status: str                   # saved | missing | no_plot | failed
    time: str
    chars: int = 0
    paragraphs: int = 0
    http_status: int | None = None
    retries: int = 0
    reason: str = ""


@dataclass
class CrawlSummary:
    saved: int = 0
    skipped: int = 0
    missing: int = 0
    no_plot: int = 0
    failed: int = 0
    failed_codes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"saved {self.saved}, skipped {self.skipped} (already saved), "
                f"missing {self.missing}, no plot {self.no_plot}, failed {self.failed}")


class CrawlAborted(Exception):
    """The wiki cannot be reached: stop instead of failing every episode."""


class Manifest:
    """OUT/manifest.jsonl: the latest record per episode, rewritten atomically
    every few seconds and at the end (the saved .txt files, not the manifest,
    decide what a resumed crawl skips)."""

    SAVE_EVERY_SECONDS = 2.0

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        self._saved_at = time.monotonic()
        self._dirty = False
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["code"]] = record
                except (ValueError, KeyError, TypeError):
                    continue   # an unreadable line only loses its own history

    def record(self, result: EpisodeResult) -> None:
        self.records[result.code] = asdict(result)
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.SAVE_EVERY_SECONDS:
            self.save()

    def save(self) -> None:
        if not self._dirty:
            return
        lines = (json.dumps(record, ensure_ascii=False) for record in self.records.values())
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        self._saved_at = time.monotonic()
        self._dirty = False


def episode_url(base_url: str, code: str) -> str:
    return base_url.rstrip("/") + "/" + quote(code)


def crawl_episode(session: requests.Session, base_url: str, code: str,
                  settings: FetchSettings) -> tuple[EpisodeResult, str | None]:
    """Fetch and parse one episode; returns its record and the plot text to save."""
    url = episode_url(base_url, code)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = fetch_page(session, url, settings)
    if page.html is None:
        return EpisodeResult(code, url, "missing", now, http_status=404, retries=page.retries,
                             reason="page does not exist"), None
    paragraphs = plot_paragraphs(page.html)
    if not paragraphs:
        reason = "no plot heading" if paragraphs is None else "plot section is empty"
        return EpisodeResult(code, url, "no_plot", now, http_status=200, retries=page.retries,
                             reason=reason), None
    text = "\n\n".join(paragraphs) + "\n"
    return EpisodeResult(code, url, "saved", now, len(text), len(paragraphs), 200,
                         page.retries), text


def crawl(codes: list[str], out_dir: Path, base_url: str = DEFAULT_BASE_URL, delay: float = 1.0,
          force: bool = False, settings: FetchSettings | None = None,
          progress: bool | None = None) -> CrawlSummary:
    """Crawl `codes` into `out_dir`. Raises CrawlAborted when the wiki cannot be reached."""
    settings = settings or FetchSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / MANIFEST_NAME)
    summary = CrawlSummary()
    session = make_session(settings)
    reached_server = False
    connect_failures = 0
    requested = False
    # progress=None: a bar on a terminal only, no carriage-return noise in logs.
    bar = tqdm(codes, unit="ep", desc="crawl", disable=None if progress is None else not progress,
               leave=False)
    try:
        for code in bar:
            target = out_dir / f"{code}.txt"
            if target.exists() and not force:
                summary.skipped += 1
                continue
            if requested and delay > 0:
                time.sleep(delay)
            requested = True
            try:
                result, text = crawl_episode(session, base_url, code, settings)
                reached_server = True
                connect_failures = 0
            except FetchError as exc:
                if exc.connect:
                    connect_failures += 1
                    if not reached_server:
                        raise CrawlAborted(f"cannot reach {base_url}: {exc}") from None
                    if connect_failures >= MAX_CONNECT_FAILURES_IN_A_ROW:
                        raise CrawlAborted(f"lost connection to {base_url}: {exc}") from None
                else:
                    reached_server = True
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                result, text = EpisodeResult(code, episode_url(base_url, code), "failed", now,
                                             http_status=exc.http_status, reason=str(exc)), None
            if text is not None:
                atomic_write_text(target, text)
            _count(summary, result)
            if result.status != "saved":
                bar.write(f"{code}: {result.status.replace('_', ' ')} ({result.reason})", file=sys.stderr)
            manifest.record(result)
    finally:
        manifest.save()
        bar.close()
        session.close()
    return summary


def _count(summary: CrawlSummary, result: EpisodeResult) -> None:
    setattr(summary, result.status, getattr(summary, result.status) + 1)
    if result.status == "failed":
        summary.failed_codes.append(result.code)


# --------------------------------------------------------------------------- command line

def positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Save the 'Episode plot' section of each Pokémon anime episode page "
                    "as OUT/<CODE>.txt, politely and resumably.")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help="MediaWiki /wiki/ root (default: %(default)s)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--series", help="series as PREFIX:COUNT, e.g. EP:274,AG:192 "
                                        "(default: EP:274,AG:192,DP:191,XY:140,SM:140)")
    which.add_argument("--episodes", help="explicit codes, e.g. EP001,AG005")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--delay", type=positive_float, default=1.0,
                        help="seconds between requests (default: %(default)s; "
                             "keep >= 1 for Bulbapedia)")
    parser.add_argument("--force", action="store_true", help="re-fetch episodes already saved")
    parser.add_argument("--timeout", type=positive_float, default=FetchSettings.timeout,
                        help="connect/read timeout in seconds (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=FetchSettings.retries,
                        help="retries on connection errors, timeouts, 429 and 5xx "
                             "(default: %(default)s)")
    parser.add_argument("--backoff", type=positive_float, default=FetchSettings.backoff,
                        help="exponential backoff factor in seconds (default: %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=FetchSettings.max_bytes,
                        help="largest page accepted (default: %(default)s)")
    parser.add_argument("--contact", default=PROJECT_URL,
                        help="contact URL or e-mail sent in the User-Agent (default: %(default)s)")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scheme = urlsplit(args.base_url).scheme
    if scheme not in ("http", "https") or not urlsplit(args.base_url).netloc:
        print(f"error: --base-url must be an http(s) URL, got {args.base_url!r}", file=sys.stderr)
        return 2
    if args.retries < 0 or args.max_bytes <= 0 or args.timeout <= 0:
        print("error: --retries must be >= 0, --max-bytes and --timeout > 0", file=sys.stderr)
        return 2
    try:
        if args.episodes:
            codes = parse_episode_list(args.episodes)
        elif args.series:
            codes = parse_series(args.series)
        else:
            codes = default_codes()
    except CodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = FetchSettings(timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                             max_bytes=args.max_bytes, contact=args.contact)
    signal.signal(signal.SIGTERM, _interrupt)   # `kill` / `docker stop` clean up like Ctrl-C
    try:
        summary = crawl(codes, args.out, args.base_url, args.delay, args.force, settings)
    except CrawlAborted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: every saved episode in {args.out} is complete; "
              "run again to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{summary.line()} -> {args.out}/ ({MANIFEST_NAME})")
    if summary.failed:
        shown = ", ".join(summary.failed_codes[:10]) + ("..." if summary.failed > 10 else "")
        print(f"error: {summary.failed} episodes failed ({shown}); run again to retry them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
