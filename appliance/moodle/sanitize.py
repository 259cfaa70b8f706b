"""Make Moodle's HTML safe to serve from the mirror (pure).

Moodle hands web-service clients HTML exactly as teachers entered it: `<script>`, `<iframe>`,
`onclick=` and `javascript:` links included (see the recordings' README). Two passes:

1. `_Rewriter` (the standard library's tokenizer) rewrites every URL: a Moodle file
   (`@@PLUGINFILE@@` became an absolute `webservice/pluginfile.php` URL in JSON, a bare file
   name in a generated page) or a Moodle module link becomes the mirror's own URL; an image,
   iframe or media element from anywhere else becomes a plain link, so opening a mirrored page
   makes no request that leaves the building; a Moodle URL the mirror does not hold loses its
   link (its text stays). Scripts, styles and comments go with their content.
2. nh3 (the Ammonia sanitizer) then applies a strict allowlist of tags and attributes to the
   result, whatever the first pass let through: no event handlers, no `style`, no `class`,
   only http, https and mailto schemes, and embedded sources only from the mirror.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser

import nh3

from appliance.moodle.model import parse_pluginfile

MIRROR_PREFIX = "/moodle/"

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
    "audio", "video", "source",
}
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
    "audio": {"src", "controls"},
    "video": {"src", "controls", "width", "height"},
    "source": {"src", "type"},
    "*": {"lang", "dir"},
}
# Elements that make the browser fetch their source by themselves.
EMBEDS = {"img", "iframe", "video", "audio", "source", "embed", "object", "track"}
DROP_WITH_CONTENT = {"script", "style", "noscript", "template", "textarea", "select", "title"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass(frozen=True)
class LinkMap:
    """How Moodle URLs map to the mirror for one piece of HTML.

    `files` maps (context id, path in the module) to the mirror's URL of that file, `modules`
    a course module id to its mirror page; `base` is (context id, folder) for the bare file
    names of a generated page (`cell.png` in a page's `index.html`, `/2/` for chapter 2)."""

    site_url: str
    files: Mapping[tuple[int, str], str] = field(default_factory=dict)
    modules: Mapping[int, str] = field(default_factory=dict)
    base: tuple[int, str] | None = None

    def is_moodle(self, url: str) -> bool:
        split = urllib.parse.urlsplit(url.strip())
        if not split.scheme and not split.netloc:
            return True  # relative: on Moodle's site, never on ours
        site = urllib.parse.urlsplit(self.site_url)
        return (split.netloc.lower(), split.scheme.lower()) == (site.netloc.lower(), site.scheme.lower()) \
            or split.netloc.lower() == site.netloc.lower()

    def resolve(self, url: str) -> str | None:
        """The mirror URL for a Moodle URL, or None when the mirror does not hold it."""
        url = url.strip()
        split = urllib.parse.urlsplit(url)
        if not split.scheme and not split.netloc and not split.path.startswith("/"):
            if self.base is None or not split.path:
                return None
            ctx, folder = self.base
            return self.files.get((ctx, folder + urllib.parse.unquote(split.path)))
        if not self.is_moodle(url):
            return None
        ref = parse_pluginfile(url)
        if ref is not None:
            return self.files.get((ref.contextid, ref.path))
        if split.path.endswith("/view.php") and "/mod/" in split.path:
            query = urllib.parse.parse_qs(split.query)
            ids = query.get("id") or []
            if ids and ids[0].isdigit():
                return self.modules.get(int(ids[0]))
        return None


class _Rewriter(HTMLParser):
    def __init__(self, links: LinkMap) -> None:
        super().__init__(convert_charrefs=True)
        self.links = links
        self.out: list[str] = []
        self.skip = 0  # inside an element dropped with its content
        self.skip_tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        if self.skip:
            if tag == self.skip_tag and not closed:
                self.skip += 1
            return
        values = {k: v or "" for k, v in attrs}
        if tag in DROP_WITH_CONTENT or tag in {"iframe", "object"}:
            if tag in {"iframe", "object"}:
                self._as_link(values.get("src") or values.get("data") or "", "")
            if not closed and tag not in VOID:
                self.skip, self.skip_tag = 1, tag
            return
        if tag in EMBEDS:
            src = values.get("src", "")
            mirrored = self.links.resolve(src) if src else None
            if tag == "img" and mirrored is None:
                self._as_link(src, values.get("alt", ""))
                return
            if mirrored is None:
                if src:
                    self._as_link(src, "")
                values.pop("src", None)
            else:
                values["src"] = mirrored
        if tag == "a" and "href" in values:
            href = values["href"]
            if self.links.is_moodle(href):
                mirrored = self.links.resolve(href)
                if mirrored is None:
                    values.pop("href")
                else:
                    values["href"] = mirrored
        self.out.append(self._tag(tag, values, closed))

    def _as_link(self, url: str, text: str) -> None:
        """An embed from outside becomes a link a pupil may follow when online."""
        if not url or self.links.is_moodle(url):
            if text:
                self.out.append(html.escape(text))
            return
        label = text or urllib.parse.urlsplit(url).netloc or url
        self.out.append(f'<a href="{html.escape(url)}">{html.escape(label)}</a>')

    @staticmethod
    def _tag(tag: str, values: dict[str, str], closed: bool) -> str:
        attrs = "".join(f' {k}="{html.escape(v)}"' for k, v in values.items())
        return f"<{tag}{attrs}{' /' if closed else ''}>"

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag == self.skip_tag:
                self.skip -= 1
            return
        if tag in DROP_WITH_CONTENT or tag in {"iframe", "object"} or tag in VOID:
            return
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(html.escape(data, quote=False))


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # Second line of defence: whatever the first pass did, an embedded source is the mirror's.
    if attribute == "src" and not value.startswith(MIRROR_PREFIX):
        return None
    return value


def sanitize(raw: str, links: LinkMap) -> str:
    """Safe HTML for the mirror from Moodle's `raw` HTML (see the module doc)."""
    rewriter = _Rewriter(links)
    rewriter.feed(raw)
    rewriter.close()
    return nh3.clean(
        "".join(rewriter.out), tags=TAGS, attributes=ATTRIBUTES, clean_content_tags=DROP_WITH_CONTENT,
        attribute_filter=_attribute_filter, url_schemes={"http", "https", "mailto"},
        strip_comments=True, link_rel="noopener noreferrer",
    )


def plain_text(raw: str) -> str:
    """The text of some HTML, for search and titles (no markup at all)."""
    text = nh3.clean(raw, tags=set(), clean_content_tags=DROP_WITH_CONTENT)
    return " ".join(html.unescape(text).split())
