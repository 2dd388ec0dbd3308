"""Names that load their module on first use (PEP 562), for the packages' ``__init__`` files."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: dict, homes: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for the module whose globals are ``package``: each name in
    ``homes`` is imported from its module on first access and then kept in ``package``."""
    name_of_package = package["__name__"]

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {name_of_package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        package[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package) | set(homes))

    return __getattr__, __dir__
