"""The testing kit shipped to users (needs hypothesis and pytest: `pip install '.[testing]'` from the clone's root).

- `runengine.testing.strategies`: hypothesis strategies for valid histories (walking the
  transition table) and for arbitrary, often invalid, events.
- `runengine.testing.machine`: a `RuleBasedStateMachine` to subclass for your own agents.
- `runengine.testing.conformance`: the storage conformance suite every store passes.
- `runengine.testing.logs`: `load_log` / `save_log`, run logs as JSON-lines fixtures.
"""
