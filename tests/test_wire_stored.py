"""Events a store reads back: built with their class's constructor, cattrs only for what it does not take."""

from __future__ import annotations

from datetime import datetime, timezone

from runengine.events import ErrorInfo, StepCompleted, TimerStarted, UnknownEvent
from runengine.wire import event_from_stored

AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


def test_a_stored_event_is_built_with_its_nested_error_and_times() -> None:
    step = event_from_stored("r", 3, "step.completed", AT, {"name": "s", "output": None, "error": {"code": "E", "message": "m"}})
    assert step == StepCompleted(run_id="r", seq=3, at=AT, name="s", error=ErrorInfo(code="E", message="m"))
    timer = event_from_stored("r", 4, "timer.started", AT, {"timer_id": "t", "until": "2026-01-02T03:04:05.000006Z"})
    assert timer == TimerStarted(run_id="r", seq=4, at=AT, timer_id="t", until=AT)


def test_a_payload_the_class_does_not_take_goes_through_cattrs() -> None:
    newer = event_from_stored("r", 5, "step.completed", AT, {"name": "s", "output": 1, "added_later": True})
    assert newer == StepCompleted(run_id="r", seq=5, at=AT, name="s", output=1)  # the unknown key is ignored
    assert isinstance(event_from_stored("r", 6, "some.new.type", AT, {"x": 1}), UnknownEvent)
