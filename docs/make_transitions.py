"""Writes docs/transitions.md from the event declarations (the test suite checks it is current).

    python docs/make_transitions.py
"""

from pathlib import Path

from runengine.events import KNOWN_EVENTS
from runengine.transitions import TRANSITIONS, mermaid

PAGE = Path(__file__).with_name("transitions.md")


def render() -> str:
    rows = "\n".join(
        f"| {'(no run)' if src is None else src.value} | `{event_type}` | {dst.value} |"
        for (src, event_type), dst in TRANSITIONS.items()
    )
    guards = "\n".join(
        f"| `{cls.type}` | {'; '.join(guard.doc for guard in cls.guards)} |" for cls in KNOWN_EVENTS if cls.guards
    )
    return f"""# Run transitions

Generated from the event declarations (`runengine/events.py`: each class's `moves` and
`guards`) by `python docs/make_transitions.py`: the reducer, the hypothesis strategies and
this page all read the same table (`runengine.transitions.TRANSITIONS`).
A pair that is not listed is refused with `InvalidTransition`, and the state is unchanged.
`(unknown)` is any event type this version does not know (kept for forward compatibility).

```mermaid
{mermaid()}
```

| from | event | to |
|---|---|---|
{rows}

Besides the table, the reducer checks that an event's `seq` is last_seq + 1 and that its
run id matches, and then each event's own guards:

| event | guard |
|---|---|
{guards}
"""


if __name__ == "__main__":
    PAGE.write_text(render())
