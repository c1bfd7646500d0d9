"""Which code a run's config would import, decided on the data before anything is imported.

A string in a config becomes an import exactly when it contains ``':'``: that is the one test
:meth:`gendiff.registry.Registry.resolve` and :func:`~gendiff.training.loading.build_network`
apply before :func:`gendiff.registry.import_object`. So every such string in a component (its
name and every argument, e.g. a schedule's ``noise`` or blur speed), in ``train.sampler`` or in
the data (``data.spec``, a dataset named ``package.module:Name``, and its ``data.args``) is
code, whatever it looks like (``0evil:Net``, ``my-mod:X`` are importable too); a registered
name never has one. No pattern decides what looks like a module.

A checkpoint, a ``--config`` file or a resumed run that names code is refused unless the caller
trusts it (``trust_code=True``, recipes' ``--trust-code``): rebuilding imports those modules and
calls what they define with arguments stored in the file, and a file's hash proves integrity,
not who wrote it.
"""
from __future__ import annotations

from typing import Any

from .checkpoint import CheckpointError
from .config import ConfigError

NOTE = "unrecorded"  # a component trained from Python with no import path: a message, never imported
COMPONENTS = ("basis", "schedule", "parameterization", "prior", "model")


class UntrustedCodeError(CheckpointError, ConfigError):
    """A file names code to import and the caller did not trust it (nothing was imported)."""


def code_names(config: Any) -> list[str]:
    """Every import path a run config (a dict, as read from a file) names, sorted."""
    if not isinstance(config, dict):
        return []
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str) and ":" in v:
            found.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                if k != NOTE:
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    for part in COMPONENTS:
        walk(config.get(part))
    train, data = config.get("train"), config.get("data")
    walk(train.get("sampler") if isinstance(train, dict) else None)
    walk([data.get("spec"), data.get("args")] if isinstance(data, dict) else None)
    return sorted(found)


def require_trust(config: Any, source: str, trust_code: bool, flag: str = "trust_code=True (recipes: --trust-code)"
                  ) -> list[str]:
    """The import paths ``config`` names; :class:`UntrustedCodeError` when there are any and the
    caller does not trust ``source`` (a phrase naming the file)."""
    code = code_names(config)
    if code and not trust_code:
        raise UntrustedCodeError(
            f"{source} names code to import: {code}. Rebuilding it imports these modules and calls what they "
            f"define with arguments stored in the file; nothing was imported. If you trust this file, pass {flag}")
    return code
