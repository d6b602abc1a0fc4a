"""Workshop lessons for the Learn page, in teaching order. Each module holds one `Lesson`
(dashboard.lessons.base): its text, controls, the runs it needs, a loader and a pure figure."""

from __future__ import annotations

from dashboard.lessons import cascades, conflict_2d, experts, negative_transfer, pareto_front
from dashboard.lessons.base import Lesson, check_lessons

LESSONS: tuple[Lesson, ...] = (
    negative_transfer.LESSON,
    conflict_2d.LESSON,
    experts.LESSON,
    pareto_front.LESSON,
    cascades.LESSON,
)
check_lessons(LESSONS)


def lesson(key: str) -> Lesson:
    for les in LESSONS:
        if les.key == key:
            return les
    raise KeyError(f"no lesson {key!r}; lessons: {[les.key for les in LESSONS]}")
