"""The backends there are. Each ``Backend`` class registers itself here (``register``) under its TVM
target kind and the torch device type of its tensors, when ``tvmconv.backends`` is imported; a
backend added later (a plugin's, a test's) registers the same way. Nothing here imports a backend,
so targets, the argument checks and the layers above find one without an import circle."""

from __future__ import annotations

_BY_KIND: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: ``cls`` (a ``Backend`` subclass with ``kind`` and ``device_type``) builds and
    runs the kernels of targets of its ``kind``, replacing any backend registered for it before."""
    _BY_KIND[cls.kind] = cls
    return cls


def unregister(kind: str) -> None:
    _BY_KIND.pop(kind, None)


def kinds() -> tuple[str, ...]:
    """The TVM target kinds some backend handles (``llvm``, ``cuda``)."""
    return tuple(_BY_KIND)


def device_types() -> tuple[str, ...]:
    """The torch device types the backends' tensors live on (``cpu``, ``cuda``)."""
    return tuple(dict.fromkeys(cls.device_type for cls in _BY_KIND.values()))


def backend_class(kind: str) -> type:
    """The backend class of a TVM target kind; ValueError naming the kinds there are."""
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise ValueError(f"target: tvmconv has backends for {list(_BY_KIND)} targets, not {kind!r}")
    return cls


def for_device(device_type: str) -> type | None:
    """The backend class whose tensors live on ``device_type`` (None where there is none)."""
    return next((cls for cls in _BY_KIND.values() if cls.device_type == device_type), None)
