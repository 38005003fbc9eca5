# Copyright (c) rum.pool contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the service's status snapshot as an HTML page and an SVG picture."""

from __future__ import annotations

from html import escape
from typing import Any, Mapping


def render_svg(snapshot: Mapping[str, Any]) -> str:
    """Return a self-contained SVG picture of the snapshot (placeholder, improved soon)."""
    n = len(snapshot.get("slots") or [])
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="960" height="80" viewBox="0 0 960 80">'
        '<text x="10" y="40">%s slots</text></svg>' % escape(str(n))
    )


def render_html(snapshot: Mapping[str, Any]) -> str:
    """Return the status page as a small HTML5 document (placeholder, improved soon)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="5"><title>rum-pool-webhook</title></head>'
        "<body>%s</body></html>" % render_svg(snapshot)
    )
