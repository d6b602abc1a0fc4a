"""Seesaw's dashboard: `streamlit run streamlit_app.py` (or `make run`).

The entry point declares the pages (st.navigation + st.Page over pages/), keeps the view state
in the URL across page switches, starts the background worker once per server process (unless
SEESAW_NO_WORKER=1) and draws the shared sidebar (dashboard.nav.frame). Training never happens
in this process: runs are queued for the worker, which trains each in its own process.
"""

from __future__ import annotations

from dashboard import nav

nav.frame().run()
