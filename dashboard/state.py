"""View state in the URL.

The state that defines a view (selected runs, axes, dataset, ...) lives in `st.query_params`,
so a copied link reproduces the view. Streamlit clears the query parameters when the user
switches pages through the navigation menu, so every value is also kept in the session and put
back into the URL on the next page (`sync_view`, called once per script run by the entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import streamlit as st

#: Query parameters that define a view and follow the user across pages.
VIEW_KEYS: tuple[str, ...] = ("runs", "dataset", "x", "y", "color", "sweep", "run", "layer")
_SESSION_KEY = "_seesaw_view"


def _saved() -> dict[str, str]:
    saved = st.session_state.get(_SESSION_KEY)
    if saved is None:
        saved = {}
        st.session_state[_SESSION_KEY] = saved
    return saved


def sync_view() -> None:
    """Merge the URL into the session's view state and restore view keys the URL lost."""
    saved = _saved()
    qp = st.query_params
    for key in VIEW_KEYS:
        if key in qp:
            saved[key] = qp[key]
        elif saved.get(key):
            qp[key] = saved[key]


def get_value(key: str, default: str = "") -> str:
    """The view value `key` from the URL (or the session when the URL lost it)."""
    if key in st.query_params:
        return str(st.query_params[key])
    return _saved().get(key, default) or default


def set_value(key: str, value: str | None) -> None:
    """Write `key` into the URL and the session; an empty value removes it."""
    saved = _saved()
    value = value or ""
    saved[key] = value
    if value:
        if st.query_params.get(key) != value:
            st.query_params[key] = value
    elif key in st.query_params:
        del st.query_params[key]


def split_ids(text: str) -> list[str]:
    """'a,b,,c' -> ['a', 'b', 'c'] (order kept, duplicates dropped)."""
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def get_list(key: str) -> list[str]:
    return split_ids(get_value(key))


def set_list(key: str, values: Iterable[str]) -> None:
    set_value(key, ",".join(values))


def view_params(**overrides: str | Sequence[str] | None) -> dict[str, str]:
    """The current view's query parameters with `overrides`, for links and `st.switch_page`."""
    out = {k: get_value(k) for k in VIEW_KEYS}
    for k, v in overrides.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, str):
            out[k] = v
        else:
            out[k] = ",".join(v)
    return {k: v for k, v in out.items() if v}


def bind_widget(widget_key: str, url_key: str, value: Any) -> None:
    """Seed a keyed widget's value from the URL the first time it is drawn on a page.

    Streamlit drops a widget's session value when the widget is not drawn in a run (another
    page was shown), so coming back seeds it again from the URL, which `sync_view` restored.
    """
    if widget_key not in st.session_state:
        st.session_state[widget_key] = value
