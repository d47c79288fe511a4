"""A minimal HTML page builder: headings, paragraphs, figures and tables, escaped."""

from __future__ import annotations

import html
import math

#: Width of the page's column in em (the body's ``max-width``); a wider image is shrunk to it.
PAGE_WIDTH_EM = 60
#: The column in CSS pixels, at a browser's default 16 px per em.
PAGE_WIDTH_PX = 16 * PAGE_WIDTH_EM


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isinf(value):  # a censored end kept as a one-sided bound
            return "+inf" if value > 0 else "-inf"
        return "n/a" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return html.escape(str(value))


class Page:
    """Accumulates blocks; :meth:`render` returns the whole document."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.blocks.append(f"<p>{html.escape(text)}</p>")

    def figure(self, filename: str, caption: str) -> None:
        self.blocks.append(
            f'<figure><img src="{html.escape(filename)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, header: list[str], rows: list[list], missing: str) -> None:
        """A table; ``missing`` explains what ``n/a`` means here, printed under it when a cell is n/a."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = [[_cell(v) for v in row] for row in rows]
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if any("n/a" in c for row in cells for c in row):
            self.paragraph(f"n/a: {missing}")

    def render(self) -> str:
        style = (
            f"body{{font-family:sans-serif;max-width:{PAGE_WIDTH_EM}em;margin:2em auto;line-height:1.45;"
            "color:#222}"
            "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:90%;color:#555}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
            "text-align:right}th{background:#f3f3f3}"
        )
        body = "\n".join(self.blocks)
        return (
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )
