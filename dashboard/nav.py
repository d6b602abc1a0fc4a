"""The app frame (page config, navigation, URL state, worker, sidebar) and the page list.

`frame()` is what the entry script does before running the chosen page. Each page calls
`require_entry()` first, because Streamlit keeps a relic of its first multipage API: until some
session of the server process has called `st.navigation`, a deep link such as
`/pareto?runs=...` runs the bare page file from `pages/` without the entry script (no sidebar,
no worker, no URL-state sync), and Streamlit's AppTest runs every switched-to page that way.
When the entry was bypassed, the page draws the frame itself (which also retires that legacy
mode for the server process) and goes on, so widget events of that run are not lost.
"""

from __future__ import annotations

import streamlit as st

_ENTRY_MARK = "_seesaw_entry_ran"


def pages() -> list[st.Page]:
    return [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page("pages/live.py", title="Live", icon=":material/monitoring:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
        st.Page("pages/conflicts.py", title="Conflicts", icon=":material/call_split:"),
        st.Page("pages/transfer.py", title="Transfer", icon=":material/compare_arrows:"),
        st.Page("pages/pareto.py", title="Pareto", icon=":material/scatter_plot:"),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
        st.Page("pages/report.py", title="Report", icon=":material/summarize:"),
    ]


def frame() -> st.Page:
    """Page config, navigation, URL view state, the worker (once per process) and the sidebar;
    returns the page to run."""
    from dashboard import queries, state, widgets

    st.set_page_config(
        page_title="Seesaw · multi-task learning lab", page_icon=":material/balance:", layout="wide"
    )
    page = st.navigation(pages())
    state.sync_view()
    queries.warm_up()
    queries.ensure_worker_once()
    widgets.sidebar()
    st.session_state[_ENTRY_MARK] = True
    return page


def require_entry() -> None:
    """First call of every page: draw the frame if the entry script did not run this time."""
    if not st.session_state.pop(_ENTRY_MARK, False):
        frame()
        st.session_state.pop(_ENTRY_MARK, None)
