"""The Learn page's Streamlit part: lesson picker, controls, teacher mode, share link, picture.

State: the lesson, its settings, the seed and the hidden controls live in the URL
(dashboard.lessons.base.encode_state) and in the session (restored after a page switch, which
clears the URL). A widget's session value wins over the URL once the widget exists (the user
moved it); a fresh session (an opened link) seeds every widget from the URL.

Runs: each redraw asks for the runs the lesson's picture needs through find-or-submit
(dashboard.queries.lesson_run), so a classroom clicking the same preset shares one run per
configuration; the picture is a fragment that refreshes itself while any of them is queued or
running. Nothing trains in this process (lesson 2's toy optimisation is two numbers of math).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st

from dashboard import queries
from dashboard.lessons import LESSONS, lesson
from dashboard.lessons.base import (
    HIDE_PARAM,
    LESSON_PARAM,
    SEED_KEY,
    SEED_PARAM,
    SEEDS,
    Control,
    Lesson,
    LessonState,
    RunSet,
    Settings,
    decode_state,
    encode_state,
)

SESSION_STATE = "_learn_state"
DRAWN_KEY = "_learn_drawn"
TEACHER_PARAM = "teacher"
TEACHER_KEY = "learn_teacher"
PICKER_KEY = "learn_lesson"
REFRESH_S = 2.5
PAGE_PATH = "learn"


def _owned_params() -> set[str]:
    keys = {LESSON_PARAM, SEED_PARAM, HIDE_PARAM}
    for les in LESSONS:
        keys |= {c.key for c in les.controls}
    return keys


def _qp() -> dict[str, str]:
    return {k: str(st.query_params.get(k)) for k in st.query_params}


def read_state() -> tuple[LessonState, bool]:
    """The lesson state from the URL, or this session's last one when the URL has none; and
    whether the URL changed since this session last wrote it (a link opened or edited: the URL
    then wins over the widgets' session values)."""
    params = _qp()
    saved = st.session_state.get(SESSION_STATE)
    if LESSON_PARAM not in params:
        if isinstance(saved, Mapping):
            return decode_state(LESSONS, dict(saved)), False
        return decode_state(LESSONS, params), False
    owned = {k: v for k, v in params.items() if k in _owned_params()}
    external = isinstance(saved, Mapping) and owned != dict(saved)
    return decode_state(LESSONS, params), external


def write_state(les: Lesson, state: LessonState) -> dict[str, str]:
    """Put the state into the URL (only the keys that changed) and the session."""
    enc = encode_state(les, state)
    qp = st.query_params
    for k in sorted(_owned_params()):
        if k in enc:
            if qp.get(k) != enc[k]:
                qp[k] = enc[k]
        elif k in qp:
            del qp[k]
    st.session_state[SESSION_STATE] = dict(enc)
    return enc


def share_link(enc: Mapping[str, str]) -> str:
    """An absolute link to this lesson state (relative when the app's URL is unknown)."""
    base = ""
    try:
        base = str(st.context.url or "")
    except Exception:  # no browser context (bare script, some test harnesses)
        base = ""
    base = base.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if not base:
        base = f"/{PAGE_PATH}"
    elif not base.endswith(f"/{PAGE_PATH}"):
        base = f"{base}/{PAGE_PATH}"
    return f"{base}?{urlencode(dict(enc))}"


# ---- widgets -----------------------------------------------------------------------------------


def _wkey(les: Lesson, key: str) -> str:
    return f"learn:{les.key}:{key}"


def _seed_widget(les: Lesson, value: Any, fresh: bool) -> Any:
    wkey = _wkey(les, SEED_KEY)
    if fresh or wkey not in st.session_state:
        st.session_state[wkey] = value
    return st.selectbox("Seed", SEEDS, key=wkey, help="the runs' seed: another seed, another sample of noise")


def _control_widget(les: Lesson, c: Control, value: Any, fresh: bool) -> Any:
    """Draw one control; returns its value."""
    wkey = _wkey(les, c.key)
    if c.kind == "points":
        pts = list(value)
        st.markdown(f"**{c.label}**: {len(pts)} · click a landscape to add one")
        b1, b2 = st.columns(2)
        if b1.button("Reset starts", key=f"{wkey}:reset", width="stretch"):
            return c.clean(c.default)
        if b2.button("Remove last", key=f"{wkey}:pop", width="stretch", disabled=not pts):
            return pts[:-1]
        return pts
    if fresh or wkey not in st.session_state:
        st.session_state[wkey] = value
    if c.kind == "select_slider":
        return st.select_slider(c.label, options=list(c.options), key=wkey, format_func=c.format, help=c.help)
    if c.kind == "multiselect":
        return st.multiselect(c.label, list(c.options), key=wkey, format_func=c.format, help=c.help)
    if c.kind == "toggle":
        return st.toggle(c.label, key=wkey, help=c.help)
    return st.slider(c.label, min_value=c.lo, max_value=c.hi, step=c.step, key=wkey, help=c.help)


def _teacher_panel(les: Lesson, state: LessonState, fresh: bool) -> list[str]:
    """Per-control visibility checkboxes; returns the hidden control keys."""
    st.markdown("**Participants see** — untick to fix a setting for everyone who opens your link:")
    labels = {c.key: c.label for c in les.controls} | {SEED_KEY: "Seed"}
    hidden: list[str] = []
    for k, label in labels.items():
        vkey = f"learn_vis:{les.key}:{k}"
        if fresh or vkey not in st.session_state:
            st.session_state[vkey] = k not in state.hidden
        if not st.checkbox(label, key=vkey):
            hidden.append(k)
    return hidden


# ---- runs --------------------------------------------------------------------------------------


def _ensure_runs(les: Lesson, settings: Settings, seed: int, retry: bool = False) -> tuple[RunSet, list[str]]:
    """Find or queue every run the picture needs; (runs, error texts)."""
    from engine.config import ConfigError
    from engine.jobs import QueueLimitError

    runs = RunSet()
    errors: list[str] = []
    for req in les.requests(settings, seed):
        try:
            if req.cosmos is not None:
                rid = queries.lesson_cosmos(req.config, req.cosmos, retry_failed=retry)
            else:
                rid = queries.lesson_run(req.config, retry_failed=retry)
        except (ConfigError, QueueLimitError, ValueError, OSError) as e:
            errors.append(f"{req.role}: {e}")
            continue
        if rid is not None:
            runs.ids[req.role] = rid
    runs.states = {role: queries.run_states([rid])[rid] for role, rid in runs.ids.items() if rid}
    return runs, errors


def _more_runs(les: Lesson, settings: Settings, seed: int) -> None:
    from engine.config import ConfigError
    from engine.jobs import QueueLimitError

    if les.more is None:
        return
    n = 0
    for req in les.more[1](settings, seed):
        try:
            queries.lesson_run(req.config)
            n += 1
        except (ConfigError, QueueLimitError, ValueError) as e:
            st.warning(f"{req.role}: {e}", icon=":material/warning:")
            break
    st.toast(f"{n} run(s) found or queued: the picture fills in as they finish.")


# ---- the page ------------------------------------------------------------------------------------


def entry_ran() -> bool:
    """True when the entry script ran before this page in this script run (call it before
    dashboard.nav.require_entry, which consumes the mark)."""
    from dashboard import nav

    return bool(st.session_state.get(nav._ENTRY_MARK))


def render(bare_first_run: bool = False) -> None:
    """The Learn page. `bare_first_run`: Streamlit ran this page file without the entry script
    (the first deep link into a fresh server, see dashboard.nav): its widgets would get other ids
    than in every later run, and the first click would reset them all, so rerun at once through
    the entry script before drawing anything."""
    if bare_first_run:
        st.rerun()
    st.title("Learn")
    st.caption(
        "Workshop lessons that train in seconds on a laptop: every participant sees the same shared "
        "runs, and a teacher can fix settings and share a link to the exact picture."
    )
    state, external = read_state()
    teacher_url = st.query_params.get(TEACHER_PARAM) == "1"
    if TEACHER_KEY not in st.session_state:
        st.session_state[TEACHER_KEY] = teacher_url

    top = st.columns([5, 1], vertical_alignment="bottom")
    titles = {les.key: f"{les.number}. {les.title.split(':')[0]}" for les in LESSONS}
    if external or st.session_state.get(PICKER_KEY) not in titles:
        st.session_state[PICKER_KEY] = state.lesson
    with top[0]:
        picked = st.segmented_control(
            "Lesson", list(titles), key=PICKER_KEY, format_func=titles.get, required=True
        )
    with top[1]:
        teacher = st.toggle(
            "Teacher mode", key=TEACHER_KEY, help="choose what participants see; share a link"
        )
    if teacher:
        st.query_params[TEACHER_PARAM] = "1"
    elif TEACHER_PARAM in st.query_params:
        del st.query_params[TEACHER_PARAM]

    fresh = external
    if picked and picked != state.lesson:  # another lesson: its defaults, same seed, nothing hidden
        les = lesson(str(picked))
        state = LessonState(les.key, les.defaults(), state.seed, [])
        fresh = True
    les = lesson(state.lesson)
    pending = st.session_state.pop("_learn_pending", None)  # settings set by a click on the picture
    if isinstance(pending, Mapping) and pending.get("lesson") == les.key:
        state.settings.update(pending.get("settings", {}))
        fresh = True

    st.subheader(f"{les.number}. {les.title}")
    text_col, ctrl_col = st.columns([3, 2], gap="large")
    with text_col:
        st.markdown(les.text)
    with ctrl_col, st.container(border=True, key="learn_controls"):
        settings = dict(state.settings)
        visible = [c for c in les.controls if teacher or c.key not in state.hidden]
        for c in visible:
            settings[c.key] = c.clean(_control_widget(les, c, state.settings[c.key], fresh))
        seed = state.seed
        if teacher or SEED_KEY not in state.hidden:
            seed = int(_seed_widget(les, state.seed, fresh))
        n_hidden = len([k for k in les.control_keys() if k in state.hidden])
        if n_hidden and not teacher:
            st.caption(f"{n_hidden} setting(s) fixed by your teacher.")
        if les.more is not None and st.button(les.more[0], key=f"learn_more:{les.key}", width="stretch"):
            _more_runs(les, settings, seed)
        hidden = list(state.hidden)
        if teacher:
            st.divider()
            hidden = _teacher_panel(les, state, fresh)

    state = LessonState(les.key, settings, seed, hidden)
    enc = write_state(les, state)
    with st.container(key="learn_share"):
        st.caption(
            "Link to this lesson, these settings, this seed" + (" and hidden controls" if hidden else "")
        )
        st.code(share_link(enc), language=None, wrap_lines=True)

    runs, errors = _ensure_runs(les, settings, seed)
    for e in errors:
        st.warning(e, icon=":material/warning:")
    _picture(les, settings, seed, runs.live)


_VIEWS: dict[tuple[str, str, int, int], tuple[Any, go.Figure]] = {}
_VIEWS_LOCK = threading.Lock()
_VIEWS_MAX = 64


def _view(les: Lesson, settings: Settings, seed: int) -> tuple[Any, go.Figure]:
    """(info, figure) of a lesson state, shared by every session for one refresh tick: 30
    participants polling the same picture cost one load and one figure per tick, not 30
    (st.plotly_chart only reads the figure: it serialises a copy)."""
    tick = int(time.time() // REFRESH_S)
    key = (les.key, json.dumps(settings, default=str, sort_keys=True), int(seed), tick)
    with _VIEWS_LOCK:
        hit = _VIEWS.get(key)
    if hit is not None:
        return hit
    info = les.load(settings, seed)
    view = (info, les.figure(info))
    with _VIEWS_LOCK:
        _VIEWS[key] = view
        for old in [k for k in _VIEWS if k[3] < tick - 1] + list(_VIEWS)[: max(0, len(_VIEWS) - _VIEWS_MAX)]:
            _VIEWS.pop(old, None)
    return view


def clear_views() -> None:
    """Forget the shared views (tests that change the lake between two page loads)."""
    with _VIEWS_LOCK:
        _VIEWS.clear()


def _picture(les: Lesson, settings: Settings, seed: int, live: bool) -> None:
    @st.fragment(run_every=REFRESH_S if live else None)
    def picture() -> None:
        slot = st.empty()
        sig = json.dumps([les.key, settings, seed], default=str, sort_keys=True)
        if les.quick is not None and st.session_state.get(DRAWN_KEY) != sig:
            slot.plotly_chart(
                les.figure(les.quick(settings, seed)), width="stretch", config={"displaylogo": False}
            )
        info, fig = _view(les, settings, seed)
        if les.on_click is not None:
            event = slot.plotly_chart(
                fig,
                width="stretch",
                key=f"learn_chart:{les.key}:{abs(hash(sig)) % 10**8}",
                on_select="rerun",
                selection_mode="points",
                config={"displaylogo": False, "displayModeBar": False},
            )
            points = list(getattr(getattr(event, "selection", None), "points", None) or [])
            new = les.on_click(settings, points) if points else None
            if new is not None:
                st.session_state["_learn_pending"] = {"lesson": les.key, "settings": new}
                st.rerun()
        else:
            slot.plotly_chart(
                fig, width="stretch", key=f"learn_chart:{les.key}", config={"displaylogo": False}
            )
        st.session_state[DRAWN_KEY] = sig
        with st.container(key="learn_summary"):
            st.markdown(les.summary(info))
        if les.table is not None:
            rows = les.table(info)
            if rows:
                st.dataframe(rows, hide_index=True, width="stretch")
        runs: RunSet = getattr(info, "runs", RunSet())
        _status(les, settings, seed, runs)
        if live and not runs.live:
            st.rerun()  # everything ended: one full redraw, and the timer stops

    picture()


def _status(les: Lesson, settings: Settings, seed: int, runs: RunSet) -> None:
    text = runs.progress_text()
    if not text:
        return
    ids = [r for r in runs.ids.values() if r]
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    c1.caption(
        text
        + (" · the picture fills in by itself" if runs.live else "")
        + " · runs are shared by everyone here"
    )
    c2.page_link(
        "pages/live.py",
        label="Watch them live",
        icon=":material/monitoring:",
        query_params={"runs": ",".join(ids)},
    )
    if runs.failed:
        st.error(
            f"These runs failed: {', '.join(runs.failed)}. See their log on Live.", icon=":material/error:"
        )
        if st.button("Retry the failed runs", key=f"learn_retry:{les.key}"):
            _ensure_runs(les, settings, seed, retry=True)
            st.rerun()
