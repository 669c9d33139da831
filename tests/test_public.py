"""The package's public surface is what we mean it to be."""

from __future__ import annotations

import importlib
import pkgutil

import pipeline


def test_public_names_are_sorted_and_importable() -> None:
    """pipeline.__all__ is sorted and every name in it exists."""
    assert pipeline.__all__ == sorted(pipeline.__all__)
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


def test_private_modules_declare_their_surface() -> None:
    """Every module and subpackage declares __all__, and each listed name exists."""
    for info in pkgutil.walk_packages(pipeline.__path__, prefix="pipeline."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        assert names is not None, info.name
        for name in names:
            assert hasattr(module, name), f"{info.name}.{name}"
