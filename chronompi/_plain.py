"""``@plain``: a dataclass whose ``__init__``, ``__repr__`` and ``__eq__`` are written once, here.

``dataclasses.dataclass`` compiles three functions per class (``exec`` of generated source, about 1 ms
each on this machine): for the 16 dataclasses a client rank imported at start-up that was half of
chronompi's import time (17 of 34 ms), paid again by every rank of a job and many times over on an
oversubscribed node (perf/bench_record.py). ``@plain`` is ``dataclass(init=False, repr=False, eq=False)``,
which compiles nothing, plus shared methods that read the class's fields: ``fields()``, ``replace()``,
``asdict()`` and pickling work as for any dataclass, equality compares the fields in order, ``frozen=True``
refuses assignment and hashes the fields. The shared ``__init__`` loops over the fields, so it is slower per
object than a generated one: for classes made a few times a run (the config, the layout, the context),
not for messages.
"""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_SPEC = "__plain_init__"  # (name, default, default_factory) of each field, in order


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    spec = getattr(cls, _SPEC)
    if len(args) > len(spec):
        raise TypeError(f"{cls.__name__}() takes {len(spec)} positional arguments but {len(args)} were given")
    for i, (name, default, factory) in enumerate(spec):
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            value = args[i]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif default is not MISSING:
            value = default
        elif factory is not MISSING:
            value = factory()
        else:
            raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        object.__setattr__(self, name, value)
    if kwargs:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _compared(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in fields(self) if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, f.name) for f in fields(self) if (f.compare if f.hash is None else f.hash)))


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(field_specifiers=(field,))
def plain(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """``@plain`` or ``@plain(frozen=True)`` on a class written as for ``@dataclass``."""

    def wrap(cls: type[T]) -> type[T]:
        if not cls.__doc__:  # (else dataclass asks inspect.signature, which parses object's text signature)
            cls.__doc__ = f"{cls.__name__}({', '.join(cls.__dict__.get('__annotations__', {}))})"
        cls = dataclass(init=False, repr=False, eq=False)(cls)
        spec = tuple((f.name, f.default, f.default_factory) for f in fields(cls) if f.init)  # type: ignore[arg-type]
        setattr(cls, _SPEC, spec)
        methods: dict[str, Any] = {"__init__": _init, "__repr__": _repr, "__eq__": _eq}
        if frozen:
            methods.update(__setattr__=_setattr, __delattr__=_delattr, __hash__=_hash)
        else:
            methods["__hash__"] = None  # as a dataclass with eq and not frozen: unhashable
        for name, method in methods.items():
            setattr(cls, name, method)
        return cls

    return wrap if cls is None else wrap(cls)
