"""Demo content the project builds itself (so its licence is ours: CC0): a small bilingual ZIM
archive made with python-libzim's writer and an OER pack folder. The lab puts both in every
simulated appliance's library; tests build archives with `build_zim` too."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from libzim.writer import Creator, Hint, Item, StringProvider

# A 1x1 PNG: an image every page loads, so a crawl checks images too.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    content: bytes | str
    mimetype: str = "text/html"
    front: bool = True


class _Item(Item):  # type: ignore[misc]
    def __init__(self, page: Page) -> None:
        super().__init__()
        self.page = page

    def get_path(self) -> str:
        return self.page.path

    def get_title(self) -> str:
        return self.page.title

    def get_mimetype(self) -> str:
        return self.page.mimetype

    def get_contentprovider(self) -> StringProvider:
        # StringProvider takes str or bytes.
        return StringProvider(self.page.content)

    def get_hints(self) -> dict[Hint, int]:
        return {Hint.FRONT_ARTICLE: self.page.front}


def build_zim(path: Path, pages: Sequence[Page], *, main: str, title: str, language: str = "eng",
              redirects: Sequence[tuple[str, str, str]] = (), fulltext: bool = True,
              description: str = "", name: str = "") -> Path:
    """Write a ZIM archive (new namespace layout) of `pages`; `redirects` are (path, title, target)."""
    creator = Creator(str(path)).config_indexing(fulltext, language).config_clustersize(64 * 1024)
    with creator:
        creator.set_mainpath(main)
        for page in pages:
            creator.add_item(_Item(page))
        for source, redirect_title, target in redirects:
            creator.add_redirection(source, redirect_title, target, {Hint.FRONT_ARTICLE: True})
        for key, value in (("Title", title), ("Language", language), ("Creator", "Classroom Edge"),
                           ("Publisher", "Classroom Edge"), ("Date", "2025-01-01"),
                           ("Description", description or title), ("Name", name or path.stem),
                           ("License", "CC0-1.0")):
            creator.add_metadata(key, value)
    return path


STYLE = "body{font-family:sans-serif;max-width:40em;margin:auto;padding:1em}img{width:1em}"


def _article(title: str, body: str, lang: str) -> str:
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="style.css">'
            f'<script>document.documentElement.dataset.js="1"</script>'
            f'</head><body><h1>{title}</h1>{body}<p><img src="pixel.png" alt=""></p></body></html>')


def demo_pages() -> list[Page]:
    return [
        Page("index.html", "Classroom demo library", _article("Classroom demo library",
             '<ul><li><a href="Water_cycle">Water cycle</a></li>'
             '<li><a href="Круговорот_воды">Круговорот воды</a>'
             '</li><li><a href="Fractions%20%26%20decimals">Fractions &amp; decimals</a></li></ul>', "en")),
        Page("Water_cycle", "Water cycle", _article("Water cycle",
             "<p>The water cycle moves water between the oceans, the air and the land: evaporation, "
             "condensation, precipitation and runoff.</p>", "en")),
        Page("Круговорот_воды", "Круговорот воды", _article("Круговорот воды",
             "<p>Круговорот воды в природе: испарение, конденсация, осадки и сток. Вода движется "
             "между океанами, воздухом и сушей.</p>", "ru")),
        Page("Fractions & decimals", "Fractions & decimals", _article("Fractions &amp; decimals",
             "<p>A fraction such as 1/2 can be written as the decimal 0.5.</p>", "en")),
        Page("style.css", "style.css", STYLE, "text/css", front=False),
        Page("pixel.png", "pixel.png", PIXEL, "image/png", front=False),
    ]


def build_demo_zim(path: Path) -> Path:
    return build_zim(path, demo_pages(), main="index.html", title="Classroom demo library",
                     redirects=[("Hydrologic_cycle", "Hydrologic cycle", "Water_cycle")],
                     description="A small demo archive built by Classroom Edge (CC0)", name="classroom_demo")


def build_demo_pack(folder: Path) -> Path:
    """An OER pack folder: an HTML5 index page with its script and style, a PDF and a sound."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(
        '<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>Дроби: первые шаги</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="css/pack.css"><script src="js/pack.js"></script></head><body>'
        '<h1>Дроби: первые шаги</h1><p>Половина, треть и четверть: дроби на примерах.</p>'
        '<p><a href="worksheet.pdf">Рабочий лист (PDF)</a></p>'
        '<audio controls src="media/tone.wav"></audio></body></html>\n', encoding="utf-8")
    (folder / "css").mkdir(exist_ok=True)
    (folder / "css" / "pack.css").write_text("body{font-family:sans-serif;margin:1em}\n")
    (folder / "js").mkdir(exist_ok=True)
    (folder / "js" / "pack.js").write_text("document.documentElement.dataset.pack = 'ready';\n")
    (folder / "worksheet.pdf").write_bytes(_tiny_pdf())
    (folder / "media").mkdir(exist_ok=True)
    (folder / "media" / "tone.wav").write_bytes(_tiny_wav())
    return folder


def _tiny_pdf() -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _tiny_wav(samples: int = 8000) -> bytes:
    import struct

    data = bytes(128 + (40 if (i // 10) % 2 else -40) for i in range(samples))
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8) + b"data" + struct.pack("<I", len(data))
            + data)
