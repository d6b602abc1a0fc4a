"""Who is at this browser: one name per session, for a dashboard several people share on a server.

Everyone sees every run; runs queued from a session carry its name as `RunConfig.owner`, and
only their owner may cancel or delete them (runs without an owner: anyone). The worker serves
owners round robin, and engine.jobs caps queued runs per owner.

This is an honest-user convention, not authentication. The name comes from, in order:

1. a header set by a trusted reverse proxy that does log people in, when `$SEESAW_USER_HEADER`
   names it (e.g. `X-Forwarded-User`); the sidebar then shows it read-only;
2. the name typed in the sidebar, kept in the session and in the URL (`?user=`), so a reload or
   a bookmark keeps it;
3. otherwise a random anonymous id for the session (`anon-3fa9c1`).
"""

from __future__ import annotations

import os
import re
import secrets

import streamlit as st

USER_PARAM = "user"
HEADER_ENV = "SEESAW_USER_HEADER"
MAX_LEN = 40
_SESSION_KEY = "_seesaw_user"
_WIDGET_KEY = "identity_name"
_BAD = re.compile(r"[^A-Za-z0-9 ._@+\-]")


def clean(name: object) -> str:
    """A displayable owner name: allowed characters only, spaces collapsed, at most 40 chars."""
    text = _BAD.sub("", str(name or ""))
    return " ".join(text.split())[:MAX_LEN].strip()


def anonymous() -> str:
    return "anon-" + secrets.token_hex(3)


def _from_header() -> str:
    header = os.environ.get(HEADER_ENV, "").strip()
    if not header:
        return ""
    try:
        return clean(st.context.headers.get(header) or "")
    except Exception:  # no request context (bare script, some test harnesses)
        return ""


def current() -> str:
    """The name of this session's user (chosen once per session, see the module doc)."""
    proxied = _from_header()
    if proxied:
        st.session_state[_SESSION_KEY] = proxied
        return proxied
    name = st.session_state.get(_SESSION_KEY)
    from_url = clean(st.query_params.get(USER_PARAM, ""))
    if from_url and from_url != name:
        name = from_url
    if not name:
        name = anonymous()
    st.session_state[_SESSION_KEY] = name
    return str(name)


def sync_url() -> str:
    """Keep `?user=` in the URL (page switches drop query parameters); returns the user."""
    user = current()
    if not _from_header() and st.query_params.get(USER_PARAM) != user:
        st.query_params[USER_PARAM] = user
    return user


def is_anonymous(user: str) -> bool:
    return user.startswith("anon-")


def owns(owner: object, user: str | None = None) -> bool:
    """True if `user` (default: this session's) may cancel or delete a run owned by `owner`."""
    owner = str(owner or "")
    if owner in ("", "nan", "None"):
        return True  # runs from before owners existed: anyone
    return owner == (user if user is not None else current())


def not_yours(owner: object, user: str | None = None) -> str | None:
    """Why this session may not cancel/delete a run of `owner`, or None if it may."""
    user = user if user is not None else current()
    if owns(owner, user):
        return None
    return f"Only {owner} can cancel this run (you are {user}: runs are cancelled by whoever queued them)."


def _on_name_change() -> None:
    typed = clean(st.session_state.get(_WIDGET_KEY, ""))
    st.session_state[_SESSION_KEY] = typed or anonymous()
    st.query_params[USER_PARAM] = st.session_state[_SESSION_KEY]


def sidebar_box() -> str:
    """The 'You are' box of the sidebar: the name runs are queued under; returns the user."""
    user = sync_url()
    proxied = bool(_from_header())
    if st.session_state.get(_WIDGET_KEY) != user:
        st.session_state[_WIDGET_KEY] = user
    st.text_input(
        "You are",
        key=_WIDGET_KEY,
        disabled=proxied,
        max_chars=MAX_LEN,
        on_change=_on_name_change,
        help="Runs you queue carry this name. Everyone sees every run; only the person who queued "
        "a run can cancel or delete it. Type your name once; it stays in the page address.",
    )
    if is_anonymous(user):
        st.caption("An anonymous name: type yours so that your runs stay yours in another tab.")
    return user
