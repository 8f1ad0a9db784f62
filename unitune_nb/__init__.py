"""unitune_nb: UniTune (text-driven editing of one image by fine-tuning a diffusion model on it), taught
in notebooks on a small embedded Imagen-like cascade, with the same API for DeepFloyd IF and Stable
Diffusion.  ``from unitune_nb import UniTune, editor``."""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"UniTune": "tune", "EDIT_DEFAULTS": "settings", "Cascade": "cascade", "Editor": "widgets", "editor": "widgets",
         "world": None, "load_image": "images"}


def __getattr__(name: str):  # lazy, so `import unitune_nb` stays fast and torch loads on first use
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'unitune_nb' has no attribute {name!r}")
    if _LAZY[name] is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = list(_LAZY)
