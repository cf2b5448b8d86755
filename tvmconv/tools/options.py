"""The command line's shared options, declared once: the workload group that tune, bench and
export take (``workload_options``), the options calibrate and the listings share, and what turns
a command line's workload options into the workloads the library takes (``Workloads.what``).

Typer reads each option from its ``Annotated`` metadata; the default stays in the signature.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

OPS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")

TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Profile name (see `tvmconv targets`); "
                                                   "default: this host's.")]
SuiteOpt = Annotated[Optional[str], typer.Option("--suite", help="A named suite of layer shapes, or 'all'.")]
SpecOpt = Annotated[Optional[str], typer.Option("--spec", help="A workload as the JSON the untuned-warning prints.")]
ModelFileOpt = Annotated[Optional[Path], typer.Option("--model", help="A tvmconv.models name (the kernels "
                                                      "tvmconv.compile runs for it) or a torch.export'ed model "
                                                      "(.pt2): its tvmconv ops and conv layers.")]
InputShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="The model's input shape (checked).")]
JsonPathOpt = Annotated[Optional[Path], typer.Option("--json", help="Write one JSON record per workload here.")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BatchOpt = Annotated[Optional[str], typer.Option("--batch", help="Batch sizes, comma-separated (e.g. 1,8): every "
                                                 "workload at each (a spec's N replaced; a .pt2 model's layers follow "
                                                 "its input's batch). Default: as given (suites are at batch 1; bench "
                                                 "--model NAME: 1,8).")]
# only this profile's entries (cache list, cache clear)
ProfileFilterOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Only this profile.")]
# one workload given by its numbers (tune, bench, export)
OpOpt = Annotated[Optional[str], typer.Option("--op", help=f"One convolution: {', '.join(OPS)}.")]
ShapeOpt = Annotated[Optional[str], typer.Option("--shape", help="Input shape of --op, e.g. 1,64,56,56.")]
WeightOpt = Annotated[Optional[str], typer.Option("--weight", help="Weight shape of --op, e.g. 64,64,3,3.")]
StrideOpt = Annotated[str, typer.Option("--stride")]
PaddingOpt = Annotated[str, typer.Option("--padding")]
DilationOpt = Annotated[str, typer.Option("--dilation")]
GroupsOpt = Annotated[int, typer.Option("--groups")]
BiasOpt = Annotated[bool, typer.Option("--bias")]

# The workload group: (parameter, option, default), in the order the commands list them.
_GROUP = (("suite", SuiteOpt, None), ("op", OpOpt, None), ("shape", ShapeOpt, None), ("weight", WeightOpt, None),
          ("stride", StrideOpt, "1"), ("padding", PaddingOpt, "0"), ("dilation", DilationOpt, "1"),
          ("groups", GroupsOpt, 1), ("bias", BiasOpt, False), ("spec", SpecOpt, None), ("model", ModelFileOpt, None),
          ("input_shape", InputShapeOpt, None), ("batch", BatchOpt, None))


@dataclass(frozen=True)
class Workloads:
    """One command line's workload options, as given (``model``: a ``Path``, or bench's ``str``)."""

    suite: Optional[str] = None
    op: Optional[str] = None
    shape: Optional[str] = None
    weight: Optional[str] = None
    stride: str = "1"
    padding: str = "0"
    dilation: str = "1"
    groups: int = 1
    bias: bool = False
    spec: Optional[str] = None
    model: Optional[Path | str] = None
    input_shape: Optional[str] = None
    batch: Optional[str] = None

    def given(self) -> list:
        """Which of --suite, --op, --spec, --model were given (their values)."""
        return [x for x in (self.suite, self.op, self.spec, self.model) if x is not None]

    def exactly_one(self, **more) -> None:
        """Refuse anything but one of --suite, --op, --spec, --model (and ``more``: ``untuned=flag``)."""
        exactly_one(self.suite, self.op, self.spec, self.model, **more)

    def batches(self) -> Optional[tuple[int, ...]]:
        """``--batch`` parsed (None: not given)."""
        return batches(self.batch)

    def input_dims(self):
        """``--input-shape`` parsed (None: not given)."""
        return ints(self.input_shape, "--input-shape")

    def what(self, target=None, suite: Optional[str] = None):
        """The workloads named by --suite (or ``suite``, a command's default), --op, --spec or
        --model (a ``tvmconv.models`` name: the kernels ``tvmconv.compile`` runs for ``target``)."""
        from ..spec import spec_from_dict

        suite = self.suite if suite is None else suite
        if suite is not None:
            return suite
        if self.spec is not None:
            return spec_from_dict(json.loads(self.spec))
        if self.model is not None:
            from ..models import MODELS
            from ..suites.workloads import network_workloads

            if str(self.model) in MODELS and not Path(self.model).exists():
                return network_workloads(str(self.model), target, compiled=True)
            return Path(self.model)
        return op_spec(self)


def workload_options(**declared):
    """Decorator: a command's ``w: Workloads`` parameter stands for the workload group's options,
    which its command line lists at that place; the command gets them as one ``Workloads``.
    ``declared``: an option of the group this command declares otherwise (bench's --suite)."""
    def wrap(command):
        sig = inspect.signature(command, eval_str=True)
        group = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                   annotation=declared.get(name, option)) for name, option, default in _GROUP]
        params = [q for p in sig.parameters.values() for q in (group if p.name == "w" else [p])]

        def run(**kwargs):
            return command(w=Workloads(**{name: kwargs.pop(name) for name, _, _ in _GROUP}), **kwargs)

        # typer reads the signature, the name and the docstring (the command's help)
        run.__signature__ = sig.replace(parameters=params)
        run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
        run.__module__ = command.__module__
        return run
    return wrap


def ints(text: Optional[str], name: str):
    """``text``'s comma-separated integers: one int, a tuple of several, None for None."""
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name) from None
    return vals[0] if len(vals) == 1 else vals


def batches(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``--batch``'s comma list of positive integers, repeats dropped (None: not given)."""
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"expected a comma-separated list of positive integers such as 1,8, got {text!r}",
                                 param_hint="--batch")
    return tuple(dict.fromkeys(sizes))


def exactly_one(suite, op, spec, model, **more) -> None:
    """Refuse anything but one of --suite, --op, --spec, --model (and ``more``: ``untuned=flag``)."""
    given = {"--suite": suite, "--op": op, "--spec": spec, "--model": model,
             **{f"--{k}": v or None for k, v in more.items()}}
    if sum(v is not None for v in given.values()) != 1:
        names = [n + (" (with --shape/--weight)" if n == "--op" else "") for n in given]
        raise typer.BadParameter(f"give exactly one of {', '.join(names[:-1])} or {names[-1]}",
                                 param_hint="/".join(given))


def op_spec(w: Workloads):
    """The spec of ``--op`` with ``--shape``, ``--weight`` and the rest; ValueError when incomplete."""
    import torch

    from ..functional import conv_spec

    if w.op not in OPS:
        raise ValueError(f"--op must be one of {OPS}, got {w.op!r}")
    if w.shape is None or w.weight is None:
        raise ValueError("--op needs --shape (input) and --weight (weight) shapes")
    nd = int(w.op[-2])
    x = torch.empty(_as_tuple(ints(w.shape, "--shape")))
    weight = torch.empty(_as_tuple(ints(w.weight, "--weight")))
    transposed = w.op.startswith("conv_transpose")
    c_out = weight.shape[1] * w.groups if transposed else weight.shape[0]
    b = torch.empty(c_out) if w.bias else None
    pad = w.padding if w.padding in ("same", "valid") else ints(w.padding, "--padding")
    return conv_spec(w.op, nd, x, weight, b, ints(w.stride, "--stride"), pad, ints(w.dilation, "--dilation"),
                     w.groups, transposed=transposed)[0]


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)
