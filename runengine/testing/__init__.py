"""The testing kit shipped to users (needs hypothesis and pytest: `pip install '.[testing]'` from the clone's root).

- `runengine.testing.strategies`: hypothesis strategies for valid histories (walking the
  transition table) and for arbitrary, often invalid, events.
- `runengine.testing.machine`: a `RuleBasedStateMachine` to subclass for your own agents.
- `runengine.testing.conformance`: the storage conformance suite every store passes.
- `runengine.testing.logs`: `load_log` / `save_log`, run logs as JSON-lines fixtures.
- `runengine.testing.check_replay` (`runengine.testing.replay_check`): replays an agent's new
  code against recorded logs, without side effects, and returns where it diverges.
- `runengine.testing.VirtualClock` (`runengine.testing.clock`): time a test moves by hand, so
  durable sleeps, ask timeouts and delayed starts are reached without waiting.
"""

from .clock import VirtualClock
from .replay_check import Divergence, check_replay

__all__ = ["Divergence", "VirtualClock", "check_replay"]
