"""The public surface (issue 21): `runengine` exports what an embedding program needs, at most 25
names, each of them importable; everything else is imported from its own module."""

from __future__ import annotations

import importlib

import runengine


def test_the_package_exports_at_most_25_names_and_each_is_importable() -> None:
    assert len(runengine.__all__) <= 25, runengine.__all__
    assert len(set(runengine.__all__)) == len(runengine.__all__)
    for name in runengine.__all__:
        assert getattr(runengine, name) is not None, name
        exec(f"from runengine import {name}", {})  # noqa: S102 - the import statement itself


def test_the_package_imports_nothing_it_does_not_export() -> None:
    # Only the exported names and the package's own dunders and submodules live in its namespace.
    public = {
        name for name, value in vars(runengine).items()
        if not name.startswith("_") and not isinstance(value, type(runengine))
    }
    assert public == set(runengine.__all__), public ^ set(runengine.__all__)


def test_what_left_the_surface_is_still_importable_from_its_module() -> None:
    for module, name in [
        ("runengine.events", "RunSuspended"), ("runengine.errors", "ConcurrencyConflict"),
        ("runengine.ports", "EventStore"), ("runengine.reducer", "Fold"), ("runengine.engine", "SessionEnded"),
        ("runengine.transitions", "TRANSITIONS"), ("runengine.state", "ToolCallRecord"),
    ]:
        assert hasattr(importlib.import_module(module), name), (module, name)
