"""The listings: ``tvmconv variants``, ``targets`` and ``suites``, each a table or (``as_json``) a
JSON list."""

from __future__ import annotations

import json

from rich.table import Table

from .terminal import console, print_json


def variants(as_json: bool) -> None:
    """The registered convolution variants."""
    from ..variants.registry import VARIANTS

    if as_json:
        return print_json([{"variant": v.name, "kind": v.kind, "note": v.note} for v in VARIANTS.values()])
    table = Table("variant", "kind", "note")
    for v in VARIANTS.values():
        table.add_row(v.name, v.kind, v.note)
    console.print(table)


def targets(as_json: bool) -> None:
    """The target profiles, the one detected for this host marked."""
    from ..backends.target import detect_profile_name, profiles

    detected = detect_profile_name()
    if as_json:
        return print_json([{"profile": name, "detected": name == detected, "target": p.target, "build": p.build,
                            "measure": p.measure, "vendor": p.vendor, "file": str(p.path)}
                           for name, p in profiles().items()])
    table = Table("", "profile", "TVM target", "build", "measure", "vendor", "file")
    for name, p in profiles().items():
        meas = p.measure.get("kind")
        if meas == "rpc":
            meas = f"rpc {p.measure.get('tracker')} key {p.measure.get('key')}"
        table.add_row("*" if name == detected else "", name, json.dumps(p.target), p.build.get("kind"), meas,
                      p.vendor, p.path)
    console.print(table)
    console.print(f"* detected for this host: {detected or 'none (the host target is used as is)'}")


def suites(as_json: bool) -> None:
    """The named suites of layer shapes, with their workloads, layers and variants."""
    from ..suites import SUITES, suite

    rows = []
    for name in [*SUITES, "all"]:
        table = suite(name)
        rows.append({"suite": name, "workloads": len(table), "layers": sum(count for _, count in table),
                     "variants": sorted({spec.variant for spec, _ in table})})
    if as_json:
        return print_json(rows)
    out = Table("suite", "workloads", "layers", "variants")
    for r in rows:
        out.add_row(r["suite"], str(r["workloads"]), str(r["layers"]), ", ".join(r["variants"]))
    console.print(out)
