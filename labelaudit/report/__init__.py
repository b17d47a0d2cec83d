"""The self-contained HTML report of a run directory (``RUN/report.html``).

>>> from labelaudit.report import write_report
>>> write_report("labelaudit-out")  # doctest: +SKIP
PosixPath('labelaudit-out/report.html')
"""

from __future__ import annotations

from labelaudit.report.render import REPORT_NAME, build_context, render_html, write_report

__all__ = ["REPORT_NAME", "build_context", "render_html", "write_report"]
