"""What a lesson is (data), and its state in a link.

A lesson is a `Lesson`: a title, a short text that says what to look at, one or two `Control`s,
the runs its picture needs (`requests`, queued through find-or-submit so a classroom shares one
run per configuration), a `load` that gathers what exists into a small info object, and a pure
`figure` (info -> plotly Figure) plus a `summary` (info -> one paragraph of what the picture
shows now). Nothing here imports streamlit; `dashboard.learn` draws lessons.

The lesson state lives in the URL (`encode_state` / `decode_state`): `lesson`, `seed`, one
parameter per control (named by the control's key) and `hide` (controls participants do not
see). A teacher's copied link opens the same lesson with the same settings, seed and hidden
controls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import plotly.graph_objects as go

Kind = Literal["select_slider", "multiselect", "toggle", "slider", "points"]
Settings = dict[str, Any]

#: URL parameters the Learn page owns (besides one per control).
LESSON_PARAM = "lesson"
SEED_PARAM = "seed"
HIDE_PARAM = "hide"
SEED_KEY = "seed"  # the seed is a control like the others for hiding
SEEDS: tuple[int, ...] = tuple(range(10))
#: Query parameters of other pages (dashboard.state.VIEW_KEYS) a control key must not reuse.
RESERVED = frozenset(
    {
        LESSON_PARAM,
        SEED_PARAM,
        HIDE_PARAM,
        "teacher",
        "user",
        "runs",
        "dataset",
        "x",
        "y",
        "color",
        "sweep",
        "run",
        "layer",
    }
)
MAX_POINTS = 8
POINT_BOUND = 10.0


def fmt_number(v: float) -> str:
    """1.0 -> '1', 0.25 -> '0.25', -0.5 -> '-0.5' (short, exact for the option values used)."""
    return format(float(v), "g")


@dataclass(frozen=True)
class Control:
    """One control of a lesson: its widget kind, default and allowed values.

    Kinds: `select_slider` (one of `options`), `multiselect` (a subset of `options`, in option
    order), `toggle` (bool), `slider` (a float in [lo, hi] on a `step` grid), `points` (up to
    MAX_POINTS (x, y) pairs inside [-10, 10]^2; set by clicking the picture).
    """

    key: str
    label: str
    kind: Kind
    default: Any
    options: tuple[Any, ...] = ()
    lo: float = 0.0
    hi: float = 1.0
    step: float = 0.05
    help: str = ""
    labels: Mapping[Any, str] = field(default_factory=dict)

    def format(self, option: Any) -> str:
        """How an option reads in the widget."""
        return self.labels.get(option, fmt_number(option) if isinstance(option, float) else str(option))

    # -- URL text <-> value ----------------------------------------------------------------

    def _opt_text(self, option: Any) -> str:
        if isinstance(option, float | int) and not isinstance(option, bool):
            return fmt_number(option)
        return str(option)

    def dump(self, value: Any) -> str:
        """The value as URL text."""
        v = self.clean(value)
        if self.kind == "toggle":
            return "1" if v else "0"
        if self.kind == "multiselect":
            return ",".join(self._opt_text(o) for o in v)
        if self.kind == "points":
            return ";".join(f"{fmt_number(x)},{fmt_number(y)}" for x, y in v)
        if self.kind == "slider":
            return fmt_number(v)
        return self._opt_text(v)

    def parse(self, text: str | None) -> Any:
        """URL text -> a valid value (the default for anything it cannot read)."""
        if text is None:
            return self.clean(self.default)
        text = str(text).strip()
        if self.kind == "toggle":
            return text.lower() in ("1", "true", "yes", "on")
        if self.kind == "multiselect":
            wanted = {p.strip() for p in text.split(",") if p.strip()}
            return [o for o in self.options if self._opt_text(o) in wanted]
        if self.kind == "points":
            pts: list[tuple[float, float]] = []
            for part in text.split(";"):
                xs = part.split(",")
                if len(xs) != 2:
                    continue
                try:
                    pts.append((float(xs[0]), float(xs[1])))
                except ValueError:
                    continue
            return self.clean(pts)
        if self.kind == "slider":
            try:
                return self.clean(float(text))
            except ValueError:
                return self.clean(self.default)
        for o in self.options:
            if self._opt_text(o) == text:
                return o
        return self.clean(self.default)

    def clean(self, value: Any) -> Any:
        """Coerce a value into the control's domain (invalid -> default)."""
        if self.kind == "toggle":
            return bool(value)
        if self.kind == "multiselect":
            vals = list(value) if isinstance(value, list | tuple) else []
            return [o for o in self.options if o in vals]
        if self.kind == "points":
            out: list[tuple[float, float]] = []
            for p in value if isinstance(value, list | tuple) else []:
                try:
                    x, y = float(p[0]), float(p[1])
                except (TypeError, ValueError, IndexError):
                    continue
                if math.isfinite(x) and math.isfinite(y):
                    pt = (
                        round(min(max(x, -POINT_BOUND), POINT_BOUND), 2),
                        round(min(max(y, -POINT_BOUND), POINT_BOUND), 2),
                    )
                    if pt not in out:
                        out.append(pt)
            return out[-MAX_POINTS:]
        if self.kind == "slider":
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = float(self.default)
            if not math.isfinite(v):
                v = float(self.default)
            v = min(max(v, self.lo), self.hi)
            return round(round((v - self.lo) / self.step) * self.step + self.lo, 6)
        return value if value in self.options else self.default


@dataclass(frozen=True)
class RunRequest:
    """A run a lesson's picture needs: a RunConfig dict (queued for the worker through
    find-or-submit) or, with `cosmos` set, a COSMOS run with those parameters."""

    config: dict[str, Any]
    role: str  # what it is in the picture ("shared-bottom at p = 0.5")
    cosmos: dict[str, Any] | None = None


@dataclass(frozen=True)
class Lesson:
    key: str
    number: int
    title: str
    text: str  # markdown: the idea in two or three sentences, then what to look at
    controls: tuple[Control, ...]
    #: settings, seed -> the runs the picture needs now (queued when the lesson is shown)
    requests: Callable[[Settings, int], list[RunRequest]]
    #: settings, seed -> the info the figure draws (reads results through dashboard.queries)
    load: Callable[[Settings, int], Any]
    figure: Callable[[Any], go.Figure]
    summary: Callable[[Any], str]
    #: settings, seed -> a cheap info to draw at once, before `load` (None: no quick draw)
    quick: Callable[[Settings, int], Any] | None = None
    #: optional extra runs behind a button: (button label, settings, seed -> requests)
    more: tuple[str, Callable[[Settings, int], list[RunRequest]]] | None = None
    #: the chart's click -> new settings (None: the chart is not clickable)
    on_click: Callable[[Settings, Sequence[Mapping[str, Any]]], Settings | None] | None = None
    #: info -> rows of a small table under the picture (None: no table)
    table: Callable[[Any], list[dict[str, Any]]] | None = None
    height: int = 520

    def control(self, key: str) -> Control:
        for c in self.controls:
            if c.key == key:
                return c
        raise KeyError(f"lesson {self.key!r} has no control {key!r}")

    def defaults(self) -> Settings:
        return {c.key: c.clean(c.default) for c in self.controls}

    def control_keys(self) -> list[str]:
        """Every hideable control: the lesson's own and the seed."""
        return [c.key for c in self.controls] + [SEED_KEY]


# ---- lesson state <-> URL ---------------------------------------------------------------------


@dataclass
class LessonState:
    lesson: str
    settings: Settings
    seed: int = 0
    hidden: list[str] = field(default_factory=list)


def encode_state(lesson: Lesson, st: LessonState) -> dict[str, str]:
    """The query parameters that reproduce a lesson state (every control spelled out)."""
    out = {LESSON_PARAM: lesson.key, SEED_PARAM: str(int(st.seed))}
    for c in lesson.controls:
        out[c.key] = c.dump(st.settings.get(c.key, c.default))
    hidden = [k for k in lesson.control_keys() if k in st.hidden]
    if hidden:
        out[HIDE_PARAM] = ",".join(hidden)
    return out


def decode_state(lessons: Sequence[Lesson], params: Mapping[str, str]) -> LessonState:
    """Read a lesson state from query parameters; unknown or invalid values fall back to the
    defaults (a hand-edited link never breaks the page)."""
    by_key = {les.key: les for les in lessons}
    lesson = by_key.get(str(params.get(LESSON_PARAM, "")), lessons[0])
    settings = {c.key: c.parse(params.get(c.key)) for c in lesson.controls}
    try:
        seed = int(str(params.get(SEED_PARAM, "0")))
    except ValueError:
        seed = 0
    if seed not in SEEDS:
        seed = 0
    wanted = {h.strip() for h in str(params.get(HIDE_PARAM, "")).split(",") if h.strip()}
    hidden = [k for k in lesson.control_keys() if k in wanted]
    return LessonState(lesson.key, settings, seed, hidden)


def check_lessons(lessons: Sequence[Lesson]) -> None:
    """Raise ValueError for clashing keys (control keys must not reuse other URL parameters)."""
    keys = [les.key for les in lessons]
    if len(set(keys)) != len(keys):
        raise ValueError(f"lesson keys repeat: {keys}")
    for les in lessons:
        ck = [c.key for c in les.controls]
        if len(set(ck)) != len(ck):
            raise ValueError(f"lesson {les.key}: control keys repeat: {ck}")
        bad = [k for k in ck if k in RESERVED]
        if bad:
            raise ValueError(f"lesson {les.key}: control keys {bad} clash with other URL parameters")


# ---- small shared pieces of the lessons --------------------------------------------------------

LESSON_TAG = "lesson"


def lesson_tags(key: str) -> list[str]:
    return [LESSON_TAG, f"{LESSON_TAG}:{key}"]


@dataclass
class RunSet:
    """The runs behind a picture and their states (role -> run id / state)."""

    ids: dict[str, str | None] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return any(s in ("queued", "running") for s in self.states.values())

    @property
    def failed(self) -> list[str]:
        return [r for r, s in self.states.items() if s in ("failed", "cancelled")]

    def progress_text(self) -> str:
        """'3 runs: 1 finished, 1 running, 1 queued' (empty when there are none)."""
        if not self.states:
            return ""
        order = ("finished", "running", "queued", "failed", "cancelled", "missing", "unknown")
        counts = {s: sum(1 for v in self.states.values() if v == s) for s in order}
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        n = len(self.states)
        return f"{n} run{'s' if n != 1 else ''}: " + ", ".join(parts)
