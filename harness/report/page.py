"""The look the harness's HTML reports share (the certificate, the reproduction report): one page
with the same style, key/value tables."""

from __future__ import annotations

import html
from collections.abc import Iterable

STYLE = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
pre{white-space:pre-wrap;margin:0;max-width:50em} img.timeline{max-width:40em;display:block}"""


def page(title: str, body: str, *, style: str = "") -> str:
    """A whole HTML page: ``title`` (escaped here), ``body`` (HTML, written by the caller)."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}{style}</style></head>
<body>{body}
</body></html>
"""


def key_rows(items: Iterable[tuple[str, object]]) -> str:
    """``<tr><th>key</th><td>value</td></tr>`` for each pair, escaped."""
    e = html.escape
    return "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in items)
