"""A parser of the exported HTML report: element ids, tables (with each row's ``data-finding``),
headings, scripts, links, anchors and <pre> blocks, and readers of the findings table and of the
report JSON the page embeds. The export and findings-wording tests check the report through it.
"""
from __future__ import annotations

import base64
import json
from html.parser import HTMLParser


class ReportDoc(HTMLParser):
    """Collects what the tests check: element ids, tables (by id) with each row's ``data-finding``,
    scripts, links, anchors, headings (h1-h6 and table header cells), <pre>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.row_keys: dict[str, list[str | None]] = {}
        self.anchors: list[dict] = []
        self.headings: list[str] = []
        self.finding_titles: list[str] = []
        self._heading: list[str] | None = None
        self._title: list[str] | None = None
        self.scripts: list[dict] = []
        self.links: list[dict] = []
        self.h2: list[str] = []
        self.pre: dict[str, str] = {}
        self.plot_divs: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._script: dict | None = None
        self._h2: list[str] | None = None
        self._pre: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if "plotly-graph-div" in (a.get("class") or "").split():
            self.plot_divs.append(a["id"])
        if tag == "table":
            self._table = a.get("id", f"table-{len(self.tables)}")
            self.tables[self._table] = []
            self.row_keys[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
            self.row_keys[self._table].append(a.get("data-finding"))
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "script":
            self._script = {"src": a.get("src"), "text": []}
        elif tag == "link":
            self.links.append(a)
        elif tag == "h2":
            self._h2 = []
        elif tag == "pre":
            self._pre = (a.get("id", ""), [])
        elif tag == "a":
            self.anchors.append(a)
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6", "th"):
            self._heading = []
        if tag == "span" and "finding-title" in (a.get("class") or "").split():
            self._title = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6", "th") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        if tag == "span" and self._title is not None:
            self.finding_titles.append("".join(self._title).strip())
            self._title = None
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script" and self._script is not None:
            self._script["text"] = "".join(self._script["text"])
            self.scripts.append(self._script)
            self._script = None
        elif tag == "h2" and self._h2 is not None:
            self.h2.append("".join(self._h2).strip())
            self._h2 = None
        elif tag == "pre" and self._pre is not None:
            self.pre[self._pre[0]] = "".join(self._pre[1])
            self._pre = None

    def handle_data(self, data):
        for buf in (self._cell, self._h2, self._heading, self._title):
            if buf is not None:
                buf.append(data)
        if self._script is not None:
            self._script["text"].append(data)
        if self._pre is not None:
            self._pre[1].append(data)


def parse(doc: str) -> ReportDoc:
    """The HTML report ``doc`` parsed."""
    parser = ReportDoc()
    parser.feed(doc)
    parser.close()
    return parser


def table_dict(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    """{first cell: {header: cell}} of a parsed table."""
    header = rows[0]
    return {r[0]: dict(zip(header, r)) for r in rows[1:]}


def findings_rows(p: ReportDoc) -> dict[str, dict[str, str]]:
    """{finding id (the row's data-finding): {header: cell}} of the report's findings table."""
    rows, keys = p.tables["findings-table"], p.row_keys["findings-table"]
    return {k: dict(zip(rows[0], r)) for k, r in zip(keys[1:], rows[1:])}


def report_json(p: ReportDoc) -> dict:
    """The report JSON the HTML report embeds in its save link (a base64 data: URL)."""
    link = next(a for a in p.anchors if a.get("id") == "report-json-link")
    head, payload = link["href"].split(",", 1)
    assert head == "data:application/json;base64"
    return json.loads(base64.b64decode(payload).decode("utf-8"))
