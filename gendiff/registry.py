"""One registry mechanism for every named component: bases, schedules, blur speeds, noise
schedules, parameterizations, priors, samplers.

A component is found by a registered name (``"blur"``) or by an import path
(``"mylab.bases:PCABasis"``), so a custom component needs no edit of gendiff: a checkpoint
records the import path and a fresh process imports it.

    BASES = Registry("basis", base=OrthoBasis)
    BASES.register("blur", GaussianBlurBasis)          # or: @BASES.register("blur")
    BASES.resolve("blur")                               # -> GaussianBlurBasis
    BASES.resolve("mylab.bases:PCABasis")               # imports mylab.bases
    BASES.build({"name": "blur", "shape": [64, 64]})    # -> GaussianBlurBasis(shape=[64, 64])
    BASES.name_of(GaussianBlurBasis)                    # -> "blur" (what a config records)
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Iterator, Mapping

__all__ = ["Registry", "UnknownNameError", "import_object", "import_path"]

PATH_HINT = "or an import path 'package.module:Name'"


class UnknownNameError(ValueError, KeyError):
    """A name that is neither registered nor an import path (a ValueError and a KeyError)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def import_object(path: str, kind: str = "object") -> Any:
    """The object at ``"package.module:Name"`` (``Name`` may be dotted: ``Outer.Inner``).

    Raises ImportError naming the module when it cannot be imported, and ValueError when the
    path is malformed or the module has no such attribute.
    """
    module, sep, attr = str(path).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{kind} import path {path!r} must look like 'package.module:Name'")
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # a module that fails half-way is as unusable as a missing one
        raise ImportError(f"cannot import module {module!r} for {kind} {path!r}: "
                          f"{type(e).__name__}: {e}", name=module) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module!r} has no attribute {attr!r} (for {kind} {path!r})")
        obj = getattr(obj, part)
    return obj


def import_path(obj: Any, kind: str = "object") -> str:
    """``"module:QualName"`` of a module-level class or function that a fresh process can import.

    Raises TypeError for what cannot be imported again: lambdas, local classes, objects
    defined in ``__main__``, objects not reachable under their own name.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise TypeError(f"{kind} {obj!r} cannot be recorded in a config: a fresh process could not "
                        "import it; define it at module level in an importable module (not __main__, "
                        "not a lambda or a local class), or register it under a name")
    found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not obj:
        raise TypeError(f"{kind} {obj!r} is not reachable as {module}:{qualname}, so it cannot be "
                        "recorded by import path; define it at module level under its own name")
    return f"{module}:{qualname}"


def _is_builtin(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "gendiff" or module.startswith("gendiff.")


class Registry:
    """Named components of one kind: register, resolve by name or import path, record in configs.

    Args:
        kind: what the entries are, for messages ("basis", "blur speed", …).
        base: when given, every entry and every imported object must be a subclass or an
            instance of it.
    """

    def __init__(self, kind: str, base: type | None = None):
        self.kind, self.base = kind, base
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does it.

        A name already taken by another object is refused (ValueError). Registering the same
        object again, or a re-executed definition of it (same module and qualified name, as
        after ``importlib.reload``), is allowed.
        """
        if obj is None:
            return lambda o: self.register(name, o)
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be a non-empty string without ':' "
                             f"(':' marks an import path), got {name!r}")
        self._check_type(obj, name)
        old = self._entries.get(name)
        if old is not None and old is not obj and _qualified(old) != _qualified(obj):
            raise ValueError(f"{self.kind} name {name!r} is already registered to {_describe(old)}; "
                             f"refusing to register {_describe(obj)} under it — choose another name")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> Any:
        """Remove and return the entry registered as ``name`` (for temporary registrations)."""
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {self.names()}")
        return self._entries.pop(name)

    def resolve(self, name: str) -> Any:
        """The entry registered as ``name``, or the object at the import path ``name``."""
        if isinstance(name, str) and ":" in name:
            obj = import_object(name, self.kind)
            self._check_type(obj, name)
            return obj
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {self.names()} {PATH_HINT}")
        return self._entries[name]

    def build(self, config: Mapping[str, Any], **extra: Any) -> Any:
        """``resolve(config["name"])(**other keys, **extra)``: rebuild a component from its config."""
        config = dict(config)
        if "name" not in config:
            raise ValueError(f"a {self.kind} config needs a 'name' (one of {self.names()} {PATH_HINT}), "
                             f"got keys {sorted(config)}")
        return self.resolve(config.pop("name"))(**config, **extra)

    def name_of(self, obj: Any) -> str:
        """What a config records for ``obj``: its registered name when it is built into gendiff
        (or defined in ``__main__``), else its import path, so a fresh process can rebuild it.

        Raises TypeError when neither works (an unregistered lambda, a local class).
        """
        if _is_builtin(obj) or getattr(obj, "__module__", None) == "__main__":
            for name, entry in self._entries.items():
                if entry is obj:
                    return name
        return import_path(obj, self.kind)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def _check_type(self, obj: Any, name: str) -> None:
        base = self.base
        if base is None or isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base)):
            return
        raise TypeError(f"{self.kind} {name!r} is {_describe(obj)}, not a {base.__name__}")

    # dict-style access, so code written against the old dicts keeps working
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Any:
        return self.resolve(name)

    def __setitem__(self, name: str, obj: Any) -> None:
        self.register(name, obj)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self):
        return self._entries.keys()

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _qualified(obj: Any) -> tuple[str | None, str | None]:
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None) or id(obj)


def _describe(obj: Any) -> str:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(obj)

