"""Learn: workshop lessons that train in seconds (negative transfer, gradient conflict in 2-D,
what experts do, the Pareto front, cascades). Teacher mode fixes settings and shares a link;
lesson runs are shared by everyone (one run per configuration)."""

from __future__ import annotations

from dashboard.learn import entry_ran, render
from dashboard.nav import require_entry

ran = entry_ran()
require_entry()
render(bare_first_run=not ran)
