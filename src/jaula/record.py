"""A light stand-in for dataclasses on the runtime's hot path.

`import dataclasses` costs about 15 ms here (it pulls in inspect, ast, dis...), more than the
whole kernel work of starting a container, so the runtime's models derive from `Record`:
fields are the class annotations, defaults the class attributes (a list, dict or set default is
copied for each instance), built by keyword or position in field order, equality and a readable repr.
"""

from __future__ import annotations

_MUTABLE = (list, dict, set)


class Record:
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}

    def __init_subclass__(cls, frozen: bool = False, **kw: object) -> None:
        super().__init_subclass__(**kw)
        if frozen:
            cls.__hash__ = lambda self: hash(tuple(getattr(self, f) for f in self._fields))  # type: ignore[method-assign]
            cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
        fields = list(cls._fields)
        defaults = dict(cls._defaults)
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("_"):
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args: object, **kw: object) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__}: at most {len(self._fields)} positional fields")
        for name, value in zip(self._fields, args):
            if name in kw:
                raise TypeError(f"{type(self).__name__}: {name!r} given twice")
            kw[name] = value
        for name in self._fields:
            if name in kw:
                value = kw.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
                if isinstance(value, _MUTABLE):
                    value = value.copy()  # type: ignore[union-attr]
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
            object.__setattr__(self, name, value)
        if kw:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kw)}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict:
        """Fields as a dict, nested Records and lists of them included (dataclasses.asdict)."""
        return {f: _plain(getattr(self, f)) for f in self._fields}

    def replace(self, **kw: object) -> "Record":
        values = {f: getattr(self, f) for f in self._fields}
        values.update(kw)
        return type(self)(**values)


def _frozen_setattr(self: Record, name: str, value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")


def _plain(v: object) -> object:
    if isinstance(v, Record):
        return v.as_dict()
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
