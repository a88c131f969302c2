"""The cyclic garbage collector paused through a burst of allocations that live on.

Recovery takes up a thousand runs at once; each resumed run keeps ~180 tracked objects alive
while it waits, and the collections the burst triggers (of the older generations) walk them
all again and again, finding next to nothing to free: ~25% of recovery's CPU. Measured on
1,000 SIGKILLed sleeping runs: 300 -> 235 ms from the engine's start until every run is back,
and one young-generation collection of ~30 ms once the collector is on again.

A long resume's replay is such a burst too (runengine.replay): the rows it reads are kept for
its lazy fold until it goes live, and the young collections its allocations trigger walk them,
and bring on the process's first full collection (12-16 ms after the imports) in the middle of it.

The collector is the process's, so a pause is short and bounded (the caller ends it, after a
deadline at the latest), pauses overlap (the collector comes back when the last one ends), and
a collector that was already off is left off. When it comes back, what was allocated meanwhile
is moved to the oldest generation unwalked (`gc.freeze` then `gc.unfreeze`), so the burst is
not walked at once by a young collection when the collector is on again (~30 ms after a
100,000-event replay); its cycles, if any, go with the next full collection. Not done when the
application froze objects itself (`gc.get_freeze_count()`): unfreezing would free them too.
"""

from __future__ import annotations

import gc

#: Pauses under way in this process (the collector is on again when the last one ends).
_pauses = 0


class CollectorPause:
    """One pause of the cyclic collector: `start`, then `end` (idempotent both)."""

    def __init__(self) -> None:
        self.held = False

    def start(self) -> None:
        global _pauses
        if self.held or (_pauses == 0 and not gc.isenabled()):
            return  # off already, by someone else's choice: theirs to turn on
        if _pauses == 0:
            gc.disable()
        _pauses += 1
        self.held = True

    def end(self) -> None:
        global _pauses
        if not self.held:
            return
        self.held = False
        _pauses -= 1
        if _pauses == 0:
            if gc.get_freeze_count() == 0:
                gc.freeze()  # the burst's objects to the oldest generation, unwalked
                gc.unfreeze()
            gc.enable()


__all__ = ["CollectorPause"]
