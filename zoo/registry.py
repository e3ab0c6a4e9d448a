"""Method registry: every avatar method registers its LightningModule class under one name.

Example:
    >>> from zoo.registry import register_method
    >>> @register_method("my_method")
    ... class MyMethod(AvatarModule): ...

`zoo.create(name, data_info, preset=None, **overrides)` builds a registered method from its config
(configs/method/<name>.yaml), the method section of an experiment preset
(configs/experiment/<name>_<preset>.yaml, a `# @package _global_` file) and the overrides;
`zoo.list_methods()` lists the names.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Type

_METHODS: Dict[str, type] = {}

# Modules that hold the built-in methods; imported lazily so `import zoo` stays cheap.
_BUILTIN_MODULES = (
    "zoo.methods.gaussian_avatar",
    "zoo.methods.exavatar",
    "zoo.methods.gs_avatar",
    "zoo.methods.humansplat_hmr",
    "zoo.methods.nopo_avatar",
)


def register_method(name: str) -> Callable[[Type], Type]:
    """Class decorator registering an `AvatarModule` subclass under `name`.

    Raises:
        ValueError: when `name` is already registered to another class.
    """

    def wrap(cls: Type) -> Type:
        existing = _METHODS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"method name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        _METHODS[name] = cls
        cls.method_name = name
        return cls

    return wrap


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_methods() -> List[str]:
    """Names of all registered methods, sorted."""
    _load_builtins()
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The class registered under `name`; a KeyError lists the valid names."""
    _load_builtins()
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
