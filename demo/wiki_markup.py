"""Render SYNTHETIC episodes as MediaWiki-like HTML pages, in two markups:

- "legacy": MediaWiki up to 1.42, `<h2><span class="mw-headline" id="Episode_plot">`,
  thumbnails as `<div class="thumb">`;
- "modern": MediaWiki 1.43+, `<div class="mw-heading mw-heading2"><h2 id="Episode_plot">`,
  thumbnails as `<figure>`.

Pages carry what a real wiki page carries around the plot: an infobox, notice
banners, a hatnote, a table of contents, image captions, edit links, reference
marks, sub-headings, a quotation and a table. `PageFeatures` switches each on or
off; `excluded_snippets` lists the text the crawler must NOT keep.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields
from html import escape
from urllib.parse import quote

from demo.synthetic_episodes import SYNTHETIC_NOTICE, SyntheticEpisode, LINK_PATTERN, plain_text

MARKUPS = ("legacy", "modern")
QUALITY_NOTICE = ("This article does not yet meet the quality standards of the demo wiki. "
                  "Please feel free to edit this article to improve it.")
SECTION_NOTICE = "This section is incomplete. Please feel free to edit this section to add missing information."
SUBHEADING = "Later that day"
TABLE_CELL = "Battle tally kept by the wiki editors"
DUPLICATE_PLOT_TEXT = ("A second plot section left over from an older revision of this page; "
                       "it repeats the episode in fewer words.")


@dataclass
class PageFeatures:
    toc: bool = True
    quality_notice: bool = True
    hatnote: bool = True
    captions: bool = True
    subheading: bool = True
    quote: bool = True
    references: bool = True
    section_notice: bool = True
    table_in_plot: bool = True
    plot_title: str = "Episode plot"     # "Plot" exercises the fallback; "" leaves the plot out
    duplicate_plot: bool = False

    @classmethod
    def varied(cls, code: str) -> "PageFeatures":
        """A deterministic mix per page, so a demo crawl meets every variant."""
        rng = random.Random(hashlib.sha256(code.encode()).digest())
        flags = {f.name: rng.random() < 0.5 for f in fields(cls) if f.type in (bool, "bool")}
        flags["duplicate_plot"] = False
        return cls(**flags)


def markup_for(code: str, markup: str) -> str:
    """'mixed' serves about half the pages in each markup."""
    if markup != "mixed":
        return markup
    return MARKUPS[hashlib.sha256(code.encode()).digest()[0] % 2]


def expected_plot_text(episode: SyntheticEpisode) -> str:
    """Exactly what the crawler should save for this episode."""
    return "\n\n".join(plain_text(p) for p in episode.paragraphs) + "\n"


def excluded_snippets(episode: SyntheticEpisode, features: PageFeatures) -> dict[str, str]:
    """Text shown on the page (near or inside the plot) that must not be saved."""
    snippets = {"synthetic notice": SYNTHETIC_NOTICE, "infobox": f"Episode code {episode.code}",
                "edit link": "[edit]", "blurb": episode.blurb,
                "major events": episode.major_events[0]}
    if features.quality_notice:
        snippets["quality notice"] = QUALITY_NOTICE
    if features.hatnote:
        snippets["hatnote"] = _hatnote_text(episode)
    if features.captions:
        snippets["caption"] = _captions(episode)[0]
    if features.subheading:
        snippets["sub-heading"] = SUBHEADING
    if features.references:
        snippets["reference mark"] = "[1]"
        snippets["reference note"] = _reference_note(episode)
    if features.section_notice:
        snippets["section notice"] = SECTION_NOTICE
    if features.table_in_plot:
        snippets["table"] = TABLE_CELL
    if features.toc:
        snippets["table of contents"] = "Contents"
    if features.duplicate_plot:
        snippets["second plot section"] = DUPLICATE_PLOT_TEXT
    return snippets


def _hatnote_text(episode: SyntheticEpisode) -> str:
    return f"For the manga chapter with a similar name, see {episode.code} (manga)."


def _captions(episode: SyntheticEpisode) -> list[str]:
    return [f"The title card of {episode.code}", f"Scene from {episode.code} drawn for the demo"]


def _reference_note(episode: SyntheticEpisode) -> str:
    return f"Demo reference note for {episode.code}."


def _links_to_html(paragraph: str) -> str:
    def anchor(match) -> str:
        target, label = match.group(1), match.group(2) or match.group(1)
        href = "/wiki/" + quote(target.replace(" ", "_"))
        return f'<a href="{escape(href)}" title="{escape(target)}">{escape(label)}</a>'

    parts, last = [], 0
    for match in LINK_PATTERN.finditer(paragraph):
        parts.append(escape(paragraph[last:match.start()], quote=False))
        parts.append(anchor(match))
        last = match.end()
    parts.append(escape(paragraph[last:], quote=False))
    return "".join(parts)


class _Page:
    def __init__(self, episode: SyntheticEpisode, markup: str, features: PageFeatures):
        if markup not in MARKUPS:
            raise ValueError(f"unknown markup {markup!r}")
        self.episode, self.markup, self.features = episode, markup, features
        self.section = 0

    def heading(self, level: int, title: str) -> str:
        self.section += 1
        anchor = escape(title.replace(" ", "_"))
        edit = (f'<span class="mw-editsection"><span class="mw-editsection-bracket">[</span>'
                f'<a href="/w/index.php?title={self.episode.code}&amp;action=edit&amp;section={self.section}"'
                f' title="Edit section: {escape(title)}">edit</a>'
                f'<span class="mw-editsection-bracket">]</span></span>')
        if self.markup == "legacy":
            return (f'<h{level}><span class="mw-headline" id="{anchor}">{escape(title)}</span>'
                    f'{edit}</h{level}>')
        return (f'<div class="mw-heading mw-heading{level}"><h{level} id="{anchor}">'
                f'{escape(title)}</h{level}>{edit}</div>')

    def image(self, caption: str, name: str) -> str:
        img = (f'<img alt="" src="/images/{name}" decoding="async" width="250" height="188"'
               f' class="mw-file-element">')
        if self.markup == "legacy":
            return (f'<div class="thumb tright"><div class="thumbinner" style="width:252px;">'
                    f'<a href="/wiki/File:{name}" class="image">{img}</a>'
                    f'<div class="thumbcaption"><div class="magnify"><a href="/wiki/File:{name}"'
                    f' class="internal" title="Enlarge"></a></div>{escape(caption)}</div></div></div>')
        return (f'<figure class="mw-default-size" typeof="mw:File/Thumb">'
                f'<a href="/wiki/File:{name}" class="mw-file-description">{img}</a>'
                f'<figcaption>{escape(caption)}</figcaption></figure>')

    def hatnote(self) -> str:
        text = escape(_hatnote_text(self.episode))
        if self.markup == "legacy":
            return f"<dl><dd><i>{text}</i></dd></dl>"
        return f'<div role="note" class="hatnote navigation-not-searchable">{text}</div>'

    def notice(self, text: str, css: str = "") -> str:
        if self.markup == "modern" and css:
            return f'<div class="notice mbox {css}"><p><b>{escape(text)}</b></p></div>'
        return (f'<table class="roundy {css}" style="margin:auto; background:#FFF;">'
                f'<tbody><tr><td style="width:40px;"><img alt="" src="/images/notice.png"></td>'
                f'<td><b>{escape(text)}</b></td></tr></tbody></table>')

    def toc(self, titles: list[str]) -> str:
        items = "".join(f'<li class="toclevel-1 tocsection-{i}"><a href="#{escape(t.replace(" ", "_"))}">'
                        f'<span class="tocnumber">{i}</span> <span class="toctext">{escape(t)}</span>'
                        f'</a></li>' for i, t in enumerate(titles, 1))
        return (f'<div id="toc" class="toc" role="navigation" aria-labelledby="mw-toc-heading">'
                f'<input type="checkbox" role="button" id="toctogglecheckbox" class="toctogglecheckbox"'
                f' style="display:none"><div class="toctitle" lang="en" dir="ltr">'
                f'<h2 id="mw-toc-heading">Contents</h2></div><ul>\n{items}\n</ul></div>')

    def infobox(self) -> str:
        e = self.episode
        return (f'<table class="roundy infobox" style="float:right; width:300px;"><tbody>'
                f'<tr><th colspan="2">{escape(e.title)}</th></tr>'
                f'<tr><td>Series</td><td>{escape(e.series)}</td></tr>'
                f'<tr><td colspan="2">Episode code {escape(e.code)}</td></tr>'
                f'<tr><td>First broadcast</td><td>never (synthetic)</td></tr></tbody></table>')

    def plot_section(self, title: str) -> list[str]:
        f, e = self.features, self.episode
        out = [self.heading(2, title)]
        if f.hatnote:
            out.append(self.hatnote())
        if f.section_notice:
            out.append(self.notice(SECTION_NOTICE, "section-notice"))
        captions = _captions(e)
        last = len(e.paragraphs) - 1
        for i, paragraph in enumerate(e.paragraphs):
            if f.captions and i in (0, 2):
                out.append(self.image(captions[i // 2], f"{e.code}_{i}.png"))
            if f.subheading and i == 3:
                out.append(self.heading(3, SUBHEADING))
            if f.table_in_plot and i == 2:
                out.append(f'<table class="wikitable"><tbody><tr><th>{TABLE_CELL}</th></tr>'
                           f'<tr><td>{escape(e.code)}: 1 win</td></tr></tbody></table>')
            html = _links_to_html(paragraph)
            if f.references and i == 1:
                html += ('<sup id="cite_ref-1" class="reference"><a href="#cite_note-1">'
                         '[1]</a></sup>')
            if f.quote and i == last - 1:
                out.append(f"<blockquote>\n<p>{html}\n</p>\n</blockquote>")
            else:
                out.append(f"<p>{html}\n</p>")
        return out

    def render(self) -> str:
        f, e = self.features, self.episode
        titles = ["Blurb"] + ([f.plot_title] if f.plot_title else []) + ["Major events", "Characters"]
        body = [self.notice(SYNTHETIC_NOTICE, "notice synthetic")]
        if f.quality_notice:
            body.append(self.notice(QUALITY_NOTICE, "quality"))
        body.append(self.infobox())
        body.append(f"<p><b>{escape(e.title)}</b> is episode {escape(e.code)} of the synthetic "
                    f"demo series modelled on {escape(e.series)}.\n</p>")
        if f.toc:
            body.append(self.toc(titles + (["References"] if f.references else [])))
        body += [self.heading(2, "Blurb"), f"<p>{escape(e.blurb)}\n</p>"]
        if f.plot_title:
            body += self.plot_section(f.plot_title)
        if f.duplicate_plot:
            body += [self.heading(2, f.plot_title or "Episode plot"),
                     f"<p>{escape(DUPLICATE_PLOT_TEXT)}\n</p>"]
        body += [self.heading(2, "Major events"),
                 "<ul>" + "".join(f"<li>{escape(m)}</li>" for m in e.major_events) + "</ul>",
                 self.heading(2, "Characters"), self.heading(3, "Humans"),
                 "<ul><li>Ash</li></ul>"]
        if f.references:
            body += [self.heading(2, "References"),
                     f'<div class="reflist"><ol class="references"><li id="cite_note-1">'
                     f'<span class="reference-text">{escape(_reference_note(e))}</span></li></ol></div>']
        return _document(e.code, "\n".join(body))


def _document(title: str, content: str) -> str:
    return f"""<!DOCTYPE html>
<html class="client-nojs" lang="en" dir="ltr">
<head>
<meta charset="UTF-8">
<title>{escape(title)} - pokegen demo wiki (synthetic)</title>
</head>
<body class="mediawiki ltr skin-monobook">
<div id="globalWrapper"><div id="column-content"><div id="content" class="mw-body" role="main">
<h1 id="firstHeading" class="firstHeading mw-first-heading"><span class="mw-page-title-main">{escape(title)}</span></h1>
<div id="bodyContent" class="vector-body">
<div id="siteSub">From the pokegen demo wiki (synthetic pages)</div>
<div id="mw-content-text" class="mw-body-content"><div class="mw-content-ltr mw-parser-output" lang="en" dir="ltr">
{content}
</div></div>
<div id="catlinks" class="catlinks"><div id="mw-normal-catlinks">Categories: Synthetic episodes</div></div>
</div></div></div>
<div id="column-one"><div class="portlet" id="p-navigation"><h3>Navigation</h3>
<div class="pBody"><ul><li><a href="/wiki/Main_Page">Main page</a></li></ul></div></div></div>
<div id="footer"><ul id="f-list"><li>Synthetic demo content generated by pokegen.</li></ul></div>
</div>
</body>
</html>
"""


def render_episode_page(episode: SyntheticEpisode, markup: str = "legacy",
                        features: PageFeatures | None = None) -> str:
    return _Page(episode, markup, features or PageFeatures()).render()


def render_missing_page(code: str) -> str:
    return _document(code, f"<p>There is currently no text in this page. The demo wiki has no "
                           f"synthetic episode {escape(code)}.</p>")


def render_main_page(codes: list[str]) -> str:
    items = "".join(f'<li><a href="/wiki/{escape(c)}">{escape(c)}</a></li>' for c in codes)
    return _document("Main Page", f"<p>{escape(SYNTHETIC_NOTICE)}</p><ul>{items}</ul>")
