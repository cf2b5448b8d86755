"""Turn what a user wants tuned into workloads: specs, suites, nn.Modules, torch.export files.

    workloads(spec | [spec, ...] | [(spec, count), ...] | "suite name" | nn.Module | "model.pt2",
              example_inputs=..., batch=None | 8 | (1, 8)) -> [(spec, count), ...]

An nn.Module gives the kernels ``tvmconv.convert`` runs for it (``converter.workloads``: fused
patterns as one spec, BatchNorm folded). A ``torch.export`` program (.pt2) gives its ``tvmconv.*``
nodes (a converted model, exported) and its convolution nodes (``aten.conv1d/2d/3d``,
``aten.conv_transpose1d/2d/3d``, ``aten.convolution``), each a spec with the argument checks of
the matching ``tvmconv.functional`` op; identical layers are counted, not repeated.

``batch`` gives every workload again at each batch size (suites are defined at batch 1): a spec's
``n`` is replaced; a model's layers follow its input's batch dimension (a layer that sees ``k``
times the input's batch sees ``k * b``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path

from ..graph import passes
from ..backends.target import TargetInfo
from ..spec import Spec, check_spec
from .shapes import SUITES, suite

def from_exported(ep) -> list[tuple[Spec, int]]:
    """The convolution workloads of a ``torch.export.ExportedProgram``."""
    table: OrderedDict = OrderedDict()
    for node in ep.graph.nodes:
        found = passes.node_spec(node)
        if found is not None:
            table[found[0]] = table.get(found[0], 0) + 1
    return list(table.items())


def from_module(model, example_inputs) -> list[tuple[Spec, int]]:
    """The convolution workloads of ``model`` called on ``example_inputs`` (a tensor or a tuple)."""
    return from_exported(_export_module(model, example_inputs))


def _export_module(model, example_inputs):
    import torch

    if example_inputs is None:
        raise ValueError("example_inputs is required to find the workloads of an nn.Module (a tensor or a "
                         "tuple of tensors shaped like the model's inputs)")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    try:
        ep = torch.export.export(model.eval(), example_inputs)
    except Exception as exc:  # noqa: BLE001 - export failures come in many types
        raise ValueError(f"model could not be captured with torch.export: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return ep


def from_file(path, input_shape=None) -> list[tuple[Spec, int]]:
    """The workloads of a ``torch.export.save``'d program (``.pt2``)."""
    return from_exported(_load_file(path, input_shape))


def _input_shapes(ep) -> tuple:
    """The shapes of an exported program's user inputs, in order."""
    user = set(ep.graph_signature.user_inputs)
    return tuple(tuple(passes.node_value(n).shape) for n in ep.graph.nodes if n.op == "placeholder" and n.name in user
                 and hasattr(passes.node_value(n), "shape"))


def _load_file(path, input_shape=None):
    import torch

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model must be a torch.export file (.pt2); {str(path)!r} does not exist")
    from .. import ops  # noqa: F401 - a program may hold tvmconv.* nodes: their ops must be registered

    try:
        ep = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"model {str(path)!r} is not a torch.export program: {exc}") from exc
    if input_shape is not None:
        found = _input_shapes(ep)
        if found and tuple(found[0]) != tuple(input_shape):
            raise ValueError(f"input_shape {tuple(input_shape)} does not match the exported program's input "
                             f"{tuple(found[0])}; re-export the model with that shape")
    return ep


def workloads(what, example_inputs=None, input_shape=None, batch=None) -> list[tuple[Spec, int]]:
    """Normalise ``what`` into ``[(spec, count), ...]``; with ``batch`` (a positive int or a list of
    them) every workload once per batch size (see the module's docstring)."""
    sizes = batches(batch)
    items, input_batch = _workloads(what, example_inputs, input_shape)
    return items if sizes is None else rebatch(items, sizes, input_batch)


def batches(batch) -> tuple[int, ...] | None:
    """``batch`` (None, a positive int, or a list of them) as a tuple of sizes without repeats."""
    if batch is None:
        return None
    sizes = (batch,) if isinstance(batch, int) else batch
    try:
        sizes = tuple(dict.fromkeys(sizes))
    except TypeError:  # not iterable, or unhashable items
        sizes = ()
    if not sizes or any(type(b) is not int or b < 1 for b in sizes):
        raise ValueError(f"batch must be a positive integer or a list of them (e.g. [1, 8]), got {batch!r}")
    return sizes


def rebatch(items, sizes, input_batch: int | None = None) -> list[tuple[Spec, int]]:
    """``items`` once per batch size in ``sizes``, each spec's ``n`` replaced by the size or, for a
    model's layers (``input_batch``: the batch of the input they were captured with), scaled from
    the input's batch to it. Each new spec passes ``check_spec``."""
    out: OrderedDict = OrderedDict()
    for spec, count in items:
        for b in sizes:
            if input_batch is None:
                n = b
            elif spec.n % input_batch == 0:
                n = spec.n // input_batch * b
            else:
                raise ValueError(f"batch: layer {spec.name} has batch {spec.n}, which is not a multiple of the "
                                 f"model input's batch {input_batch}; export the model with the batch you want")
            new = dataclasses.replace(spec, n=n)
            check_spec(new)  # (a batch too large for 32-bit indexing is named here)
            out[new] = out.get(new, 0) + count
    return list(out.items())


def _workloads(what, example_inputs, input_shape) -> tuple[list[tuple[Spec, int]], int | None]:
    """``(workloads, batch of the model input they were captured with, or None: not a model)``."""
    if isinstance(what, Spec):
        return [(what, 1)], None
    if isinstance(what, str) and (what in SUITES or what == "all"):
        return suite(what), None
    if isinstance(what, (str, Path)) and str(what).endswith((".pt2", ".pt")):
        return _from_program(_load_file(what, input_shape))
    if isinstance(what, (list, tuple)) and what:
        out: OrderedDict = OrderedDict()
        for item in what:
            spec, count = item if isinstance(item, tuple) else (item, 1)
            if not isinstance(spec, Spec):
                raise ValueError(f"workloads must be specs or (spec, count) pairs, got {item!r}")
            out[spec] = out.get(spec, 0) + count
        return list(out.items()), None
    try:
        import torch

        if isinstance(what, torch.nn.Module):
            return _from_model(what, example_inputs)
    except ImportError:  # pragma: no cover
        pass
    raise ValueError(f"what to tune must be a spec, a list of specs, a suite name from "
                     f"{sorted(SUITES) + ['all']}, an nn.Module (with example_inputs) or a .pt2 file; got {what!r}")


def _from_program(ep) -> tuple[list[tuple[Spec, int]], int | None]:
    shapes = _input_shapes(ep)
    return from_exported(ep), (int(shapes[0][0]) if shapes and shapes[0] else None)


def _from_model(model, example_inputs) -> tuple[list[tuple[Spec, int]], int | None]:
    import torch

    from ..graph.converter import workloads as model_workloads

    if example_inputs is None:
        raise ValueError("example_inputs is required to find the workloads of an nn.Module (a tensor or a "
                         "tuple of tensors shaped like the model's inputs)")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() else None
    return model_workloads(model, inputs), (int(first.shape[0]) if first is not None else None)


def network_workloads(name: str, target: TargetInfo | None = None, batch=None, *, compiled: bool = False) -> list[tuple]:
    """The kernels ``tvmconv.convert`` runs for a ``tvmconv.models`` network (its plain-PyTorch
    form) on one input of each batch size in ``batch`` (default 1), as ``[(spec, count), ...]``
    (``converter.workloads``: nothing is compiled); ``compiled``: those ``tvmconv.compile`` runs for
    ``target`` (``lowering.fuse_where_tuned``)."""
    import torch

    from ..graph.converter import workloads
    from ..graph.lowering import fuse_where_tuned
    from ..models import MODELS, input_size

    model = MODELS[name](backend="torch").eval()
    size = input_size(name)
    separable = fuse_where_tuned(target) if compiled else True
    counts: dict = {}
    for n in batches(batch) or (1,):
        for spec, c in workloads(model, (torch.randn(n, 3, size, size),), separable=separable):
            counts[spec] = counts.get(spec, 0) + c
    return list(counts.items())
