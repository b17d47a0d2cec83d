"""Find the report's jinja2 templates, installed or in a source checkout.

Installed from a wheel, the templates are the package data ``labelaudit/templates/``
(mapped from ``reports/templates/`` at build time). In a source checkout (editable
install) they are read from ``<repo>/reports/templates/``.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

#: The templates' directory in a source checkout.
SOURCE_TEMPLATES = Path(__file__).resolve().parents[2] / "reports" / "templates"
MAIN_TEMPLATE = "report.html.j2"


def template_loader() -> jinja2.BaseLoader:
    """A loader for the report templates: the installed package data, else the checkout.

    Raises
    ------
    FileNotFoundError
        Neither location holds the templates (a broken installation).
    """
    try:
        loader = jinja2.PackageLoader("labelaudit", "templates")
        loader.get_source(jinja2.Environment(), MAIN_TEMPLATE)
        return loader
    except (ValueError, ModuleNotFoundError, jinja2.TemplateNotFound):
        pass
    if (SOURCE_TEMPLATES / MAIN_TEMPLATE).is_file():
        return jinja2.FileSystemLoader(SOURCE_TEMPLATES)
    raise FileNotFoundError(
        f"the report templates are missing: neither labelaudit/templates/{MAIN_TEMPLATE} "
        f"(installed package data) nor {SOURCE_TEMPLATES / MAIN_TEMPLATE} exists; reinstall"
    )
