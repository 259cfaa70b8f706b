"""What every portal page shares: sizes as people read them, and the health check.

The front page itself is the content library's (`appliance/content/portal_views.py`)."""

from __future__ import annotations

from gettext import NullTranslations
from typing import Any

from babel import Locale
from flask import Blueprint

from appliance import i18n

bp = Blueprint("landing", __name__)


def human_size(size: int, locale: Locale | str = "en", translations: NullTranslations | None = None) -> str:
    """340 MB, 1.2 GB, 12 kB: decimal units, as phones and file managers show them.

    Figures are written as `locale` writes them ("1,2 ГБ" in Russian); unit names come from
    `translations` (English without).
    """
    tr = translations or NullTranslations()
    if size < 1000:
        return tr.ngettext("%(num)s byte", "%(num)s bytes", size) % {"num": size}
    value, unit = float(size), "kB"
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    pattern = "0.0" if unit in ("MB", "GB") and value < 10 else "0"
    # The unit templates are literal here so that extraction finds them.
    template = {"kB": tr.gettext("%(num)s kB"), "MB": tr.gettext("%(num)s MB"),
                "GB": tr.gettext("%(num)s GB")}[unit]
    return template % {"num": i18n.format_decimal(value, pattern, locale=locale)}


@bp.app_template_filter("human_size")
def _human_size_filter(size: int) -> str:
    return human_size(size, i18n.formatting_locale(), i18n.translations())


@bp.get("/healthz")
def healthz() -> Any:
    return {"ok": True}
