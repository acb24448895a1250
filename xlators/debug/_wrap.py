"""Shared helper of the debug translators: fop methods generated from the fop table.

delay-gen, error-gen, trace and io-stats wrap *every* fop the same way.  Rather than 35
hand-written methods each, a translator module gives a factory ``make(fop) -> async
method`` and :func:`install_fops` puts one method per fop on the class, named and with
the signature the fop table gives (so ``overridden_fops()``, the docs and ``inspect`` see
ordinary fops).  A generated method takes ``(self, frame, *args, **kwargs)`` and winds
with ``getattr(self.child, name)(frame, *args, **kwargs)``; :func:`named_args` turns the
call's arguments into ``(name, value)`` pairs for messages.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Iterable

from ..core.fops import FOP_NAMES, FOPS, Fop, resolve_fop_names
from ..core.translator import gate_forget

log = logging.getLogger("xlfs.debug")

Factory = Callable[[Fop], Callable[..., Any]]

#: GlusterFS's "cbks" rather than fops: forget and release have no caller waiting for an
#: answer, must not block, and cannot meaningfully fail.  Fault injection leaves them alone.
CALLBACK_FOPS = frozenset({"forget", "release", "releasedir"})
INJECTABLE_FOPS = tuple(f for f in FOPS if f.name not in CALLBACK_FOPS)


def fop_signature(fop: Fop) -> inspect.Signature:
    """``(self, frame, <params of the fop table>)`` with None defaults for "name=" params."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind), inspect.Parameter("frame", kind)]
    for p in fop.params:
        default = None if p.endswith("=") else inspect.Parameter.empty
        params.append(inspect.Parameter(p.rstrip("="), kind, default=default))
    return inspect.Signature(params)


def install_fops(cls: type, make: Factory, fops: Iterable[Fop] = FOPS,
                 doc: str = "") -> type:
    """Set ``cls.<fop> = make(fop)`` for every fop; returns ``cls`` (usable as a decorator
    through :func:`wraps_all_fops`)."""
    for fop in fops:
        fn = make(fop)
        fn.__name__ = fop.name
        fn.__qualname__ = f"{cls.__name__}.{fop.name}"
        fn.__signature__ = fop_signature(fop)  # type: ignore[attr-defined]
        fn.__doc__ = (f"{fop.name}(frame, {', '.join(fop.params)}) -> {fop.result}. "
                      f"{doc}").strip()
        setattr(cls, fop.name, fn)
    gate_forget(cls)            # a translator declaring forget_needs_context
    return cls


def wraps_all_fops(make: Factory, doc: str = "") -> Callable[[type], type]:
    """Class decorator: ``@wraps_all_fops(make)``."""
    def deco(cls: type) -> type:
        return install_fops(cls, make, FOPS, doc)
    return deco


def named_args(fop: Fop, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """The call's arguments as (table name, value) pairs, in table order."""
    names = fop.param_names
    out = list(zip(names, args))
    if kwargs:
        out.extend((n, kwargs[n]) for n in names[len(args):] if n in kwargs)
    return out


def arg_getter(fop: Fop, param: str) -> Callable[[tuple, dict], Any]:
    """A fast accessor for one named parameter of a generated method's call."""
    idx = fop.param_names.index(param)

    def get(args: tuple, kwargs: dict) -> Any:
        if len(args) > idx:
            return args[idx]
        return kwargs.get(param)
    return get


def lenient_fops(text: str) -> frozenset[str]:
    """Parse a fop list the way GlusterFS's error-gen and trace do: case-insensitive,
    GlusterFS aliases accepted, an empty text means every fop, and a name that is not a
    fop is skipped with a warning (GlusterFS: "Wrong option value") instead of failing."""
    return resolve_fop_names(text, on_unknown=lambda w: log.warning(
        "not a fop name: %r (ignored; known: %s)", w, ", ".join(FOP_NAMES)))

