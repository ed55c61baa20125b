"""One self-contained HTML page (images embedded as data URIs, no scripts, no external resources),
and the table helpers that ``comparison.md`` and the report share.

A section's content may be:

- ``str``: an HTML fragment, inserted as is (the caller escapes what it interpolates);
- a path to an image (``.png``, ``.jpg``, ``.svg``): embedded as a base64 data URI;
- a path to a text file (``.yaml``, ``.csv``, ``.json``, ``.md``, ``.txt`` ...): shown in ``<pre>``;
- ``("pre", text)``, ``("text", text)``, ``("html", fragment)``, ``("image", path_or_png_bytes)``,
  ``("table", (rows, columns))``;
- a list of any of these.

The finished page is checked: any ``src``/``href`` that is not a data URI or an in-page anchor
raises ``ValueError``, so a report can never depend on the network or on files beside it.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from medseg.utils import atomic_write_text

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #0072B2; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
nav ul { columns: 2; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
th { background: #f3f6f9; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; font-size: .8rem; }
footer { margin-top: 3rem; color: #777; font-size: .8rem; }
"""


# -- tables ---------------------------------------------------------------------------------------
def format_cell(value: Any) -> str:
    """Numbers for tables: floats to 4 decimals (``nan``/``inf`` spelled out), the rest as text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4f}"
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    return seen


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped, missing cells are blank."""
    cols = _columns(rows, columns)

    def cell(v: Any) -> str:
        return format_cell(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML ``<table>`` with a header row; every cell is escaped."""
    cols = _columns(rows, columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(format_cell(r.get(c)))}</td>" for c in cols) + "</tr>"
                     for r in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# -- content --------------------------------------------------------------------------------------
def image_data_uri(image: str | Path | bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` of an image file (type from its suffix) or of PNG bytes."""
    if not isinstance(image, bytes):
        path = Path(image)
        mime = IMAGE_TYPES.get(path.suffix.lower(), mime)
        image = path.read_bytes()
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _image(image: str | Path | bytes, alt: str) -> str:
    return f'<figure><img src="{image_data_uri(image)}" alt="{html.escape(alt)}"></figure>'


def _pre(text: str) -> str:
    return f"<pre>{html.escape(str(text))}</pre>"


_KINDS: dict[str, Callable[[Any, str], str]] = {
    "html": lambda payload, _t: str(payload),
    "text": lambda payload, _t: f"<p>{html.escape(str(payload))}</p>",
    "pre": lambda payload, _t: _pre(payload),
    "image": lambda payload, title: _image(payload, title),
    "table": lambda payload, _t: html_table(*payload),
}


def render_content(content: Any, title: str = "") -> str:
    """The HTML of one section's content (see the module docstring for the accepted forms)."""
    if isinstance(content, str):
        return content
    if isinstance(content, bytes):
        return _image(content, title)
    if isinstance(content, os.PathLike):
        content = Path(content)
        if not content.is_file():
            raise FileNotFoundError(f"report section {title!r}: {content} does not exist")
        if content.suffix.lower() in IMAGE_TYPES:
            return _image(content, title)
        return _pre(content.read_text(encoding="utf-8"))
    if isinstance(content, tuple) and len(content) == 2 and isinstance(content[0], str) and content[0] in _KINDS:
        return _KINDS[content[0]](content[1], title)
    if isinstance(content, list | tuple):
        return "\n".join(render_content(item, title) for item in content)
    raise TypeError(f"report section {title!r}: cannot render {type(content).__name__}")


def _anchor(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    anchor, k = base, 2
    while anchor in used:
        anchor, k = f"{base}-{k}", k + 1
    used.add(anchor)
    return anchor


_URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "background"}
_CSS_URL = re.compile(r"""url\(\s*["']?\s*([^"')\s]*)""", re.IGNORECASE)


class _References(HTMLParser):
    """Collects URL-valued attributes and CSS ``url()`` targets of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in _URL_ATTRIBUTES and value is not None:
                self.targets.append(value.strip())
            elif name == "style" and value:
                self.targets += _CSS_URL.findall(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.targets += _CSS_URL.findall(data)


def external_references(page: str) -> list[str]:
    """Every URL attribute or CSS ``url()`` in ``page`` that is neither a data URI nor an in-page anchor."""
    parser = _References()
    parser.feed(page)
    parser.close()
    return [t for t in parser.targets if not (t.startswith("data:") or t.startswith("#"))]


def render_report(title: str, sections: Sequence[tuple[str, Any]], subtitle: str | None = None) -> str:
    """The HTML5 page as a string (see :func:`write_report`)."""
    used: set[str] = set()
    anchors = [_anchor(name, used) for name, _ in sections]
    toc = "\n".join(f'<li><a href="#{a}">{html.escape(name)}</a></li>' for a, (name, _) in zip(anchors, sections))
    body = "\n".join(
        f'<section id="{a}">\n<h2>{html.escape(name)}</h2>\n{render_content(content, name)}\n</section>'
        for a, (name, content) in zip(anchors, sections)
    )
    stamp = datetime.now().isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
{f"<p>{html.escape(subtitle)}</p>" if subtitle else ""}
<nav><ul>
{toc}
</ul></nav>
</header>
<main>
{body}
</main>
<footer>Written by medseg on {stamp}. Self-contained: every image is embedded in this file.</footer>
</body>
</html>
"""
    bad = external_references(page)
    if bad:
        raise ValueError(f"report {title!r} would load external resources: {bad[:3]}; embed them instead")
    return page


def write_report(
    out_html: str | Path, title: str, sections: Sequence[tuple[str, Any]], subtitle: str | None = None
) -> Path:
    """Write one self-contained HTML5 page: a contents list, then one ``<section>`` per ``(heading, content)``."""
    out_html = Path(out_html)
    atomic_write_text(out_html, render_report(title, sections, subtitle))
    return out_html
