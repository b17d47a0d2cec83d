"""JSON embedded in the report page: escaped for ``<script>`` and free of NaN.

Each figure is embedded as JSON in a ``<script type="application/json">`` element;
``<``, ``>`` and ``&`` are escaped as ``\\u003c`` etc., so no string can close the
script element.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from labelaudit.core.io import finite, json_default
from labelaudit.report import figures as fg


def script_json(text_or_obj: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped."""
    text = (
        text_or_obj
        if isinstance(text_or_obj, str)
        else json.dumps(
            finite(text_or_obj), default=json_default, separators=(",", ":"), allow_nan=False
        )
    )
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


class Figures:
    """Collects the page's figures as JSON, with the shared template stored once."""

    def __init__(self) -> None:
        self.template = fg.page_template()
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, fig: Any, role: str = "") -> dict[str, Any]:
        """Embed ``fig`` as ``fig-<name>`` (``role`` wires page behaviour such as clicks)."""
        spec = json.loads(fig.to_json())
        spec.setdefault("layout", {}).pop("template", None)
        item = {
            "id": f"fig-{name}",
            "json": script_json(json.dumps(finite(spec), separators=(",", ":"))),
            "role": role,
        }
        self.items.append(item)
        return item
