"""Writes docs/transitions.md from the transition table (the test suite checks it is current)."""

from pathlib import Path

from runengine.transitions import TRANSITIONS, mermaid

rows = "\n".join(
    f"| {'(no run)' if src is None else src.value} | `{event_type}` | {dst.value} |"
    for (src, event_type), dst in TRANSITIONS.items()
)
text = f"""# Run transitions

Generated from `runengine/transitions.py` by `python docs/make_transitions.py`: the
reducer, the hypothesis strategies and this page all read the same table.
A pair that is not listed is refused with `InvalidTransition`, and the state is unchanged.
`(unknown)` is any event type this version does not know (kept for forward compatibility).

```mermaid
{mermaid()}
```

| from | event | to |
|---|---|---|
{rows}

Besides the table, the reducer checks each event's own guards: `seq` is last_seq + 1 and
the run id matches; a `message.delta` continues the open message (or opens one when none
is open); a `message.completed` closes the open message (or records a whole one); a
`tool.call` id is new; a `tool.result` answers an open `tool.call`; a `message.discarded`
names the open message; a `timer.fired` answers the running `timer.started`, and only one
timer runs at a time.
"""
Path(__file__).with_name("transitions.md").write_text(text)
