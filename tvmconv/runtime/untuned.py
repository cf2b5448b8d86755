"""Workloads the ops ran with their default schedule (no tuned record), listed once.

``build`` warns about the first untuned workload of a process at once and notes every one here
(only when a kernel is first built, never on a call). Each note is also merged into
``<user root>/untuned/<profile>.json`` (atomically, under its lock, bounded to ``MAX_ENTRIES``, the
least recently noted dropped), so that ``tvmconv tune --untuned --target <profile>`` tunes exactly
the workloads that ran untuned on this machine; tuning a workload into the user cache takes it off
the list (``forget``). When the process ends, if it used more than one untuned workload, one
warning lists them all (names and how many) with that one command.

File: ``{"format": 1, "profile": P, "workloads": {spec key: {"name", "spec", "uses", "last"}}}``
(``uses``: how many processes noted it; ``last``: when, in seconds since the epoch).
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from pathlib import Path

from filelock import Timeout

from . import cache
from ..spec import Spec, spec_from_dict

log = logging.getLogger("tvmconv")

FORMAT = 1
MAX_ENTRIES = 512  # per profile: a process sweeping shapes must not grow the file without end
# Noting is optional (the op runs either way): never wait long for a lock another process holds
LOCK_TIMEOUT_S = 2
_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a file name: no separators, no ".."
UNNAMED = ("custom", "host")  # targets `tvmconv tune --target` cannot name: not listed

_lock = threading.Lock()
_seen: dict[tuple[str, Spec], None] = {}  # this process's untuned workloads, in order (profile, spec)
_registered = False


def path(profile: str) -> Path | None:
    """The list file of ``profile`` in the user cache (None: not a name that may become a file)."""
    if not isinstance(profile, str) or not _PROFILE.match(profile):
        return None
    return cache.user_root() / "untuned" / f"{profile}.json"


def note(spec: Spec, target) -> None:
    """Note that ``spec`` runs untuned on ``target`` (a ``TargetInfo``): in this process's list and
    in the profile's file. Never raises."""
    global _registered
    if target.profile in UNNAMED:
        return
    with _lock:
        if (target.profile, spec) in _seen:
            return
        _seen[(target.profile, spec)] = None
        if not _registered:
            _registered = True
            atexit.register(report)
    _store(target.profile, spec)


def seen() -> list[tuple[str, Spec]]:
    """This process's untuned workloads so far, ``[(profile, spec), ...]`` in the order noted."""
    with _lock:
        return list(_seen)


def _read(p: Path) -> dict:
    obj = cache.read_json(p)  # (absent: None; not JSON: set aside)
    ok = isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("workloads"), dict)
    return obj["workloads"] if ok else {}


def _update(profile: str, change) -> None:
    """Apply ``change(entries)`` to the profile's file under its lock. Never raises: a note not
    stored costs only the list's completeness."""
    p = path(profile)
    if p is None:
        return
    try:
        cache.make_dirs(p.parent)
        if not cache.trusted(p.parent):
            return
        if not p.parent.resolve().is_relative_to(cache.user_root().resolve()):  # a symlink out of the cache
            log.info("tvmconv: %s lies outside the cache %s; the untuned-workload list is not updated", p.parent,
                     cache.user_root())
            return
        with cache.lock(p, timeout=LOCK_TIMEOUT_S):
            entries = _read(p)
            if not change(entries):
                return
            if len(entries) > MAX_ENTRIES:
                newest = sorted(entries.items(), key=lambda kv: kv[1].get("last", 0))[-MAX_ENTRIES:]
                entries = dict(newest)
            cache.write_json(p, {"format": FORMAT, "profile": profile, "workloads": entries})
    except Timeout:
        log.info("tvmconv: %s.lock is held by another process; the untuned-workload list is not updated", p)
    except OSError as exc:
        log.info("tvmconv: could not update the untuned-workload list %s: %s", p, exc)


def _store(profile: str, spec: Spec) -> None:
    def add(entries: dict) -> bool:
        old = entries.get(spec.key)
        uses = old.get("uses", 0) if isinstance(old, dict) and isinstance(old.get("uses"), int) else 0
        entries[spec.key] = {"name": spec.name, "spec": spec.to_dict(), "uses": uses + 1, "last": time.time()}
        return True

    _update(profile, add)


def forget(specs, profile: str) -> None:
    """Take ``specs`` off ``profile``'s list (they were tuned into the user cache)."""
    keys = {s.key for s in specs}
    p = path(profile)
    if not keys or p is None or not p.exists():
        return
    _update(profile, _dropping(keys))


def _dropping(keys):
    """The change (for ``_update``) that drops ``keys``; it writes only when one was there."""
    def change(entries: dict) -> bool:
        hit = [k for k in keys if k in entries]
        for k in hit:
            del entries[k]
        return bool(hit)

    return change


def pending(profile: str) -> list[tuple[Spec, int]]:
    """The workloads on ``profile``'s list that still have no tuned record for it (or a profile it
    can run), least recently noted first, as ``[(spec, count 1), ...]``: what ``tvmconv tune
    --untuned`` tunes. An entry that is no longer a valid spec is dropped with a warning."""
    from ..backends.target import resolve

    p = path(profile)
    if p is None:
        raise ValueError(f"target must be a profile name to list its untuned workloads, got {profile!r}")
    if not p.exists() or not cache.trusted(p.parent):
        return []
    tgt = resolve(profile)
    out, bad = [], []
    for key, entry in sorted(_read(p).items(), key=lambda kv: kv[1].get("last", 0) if isinstance(kv[1], dict)
                             else 0):
        try:
            spec = spec_from_dict(entry.get("spec") if isinstance(entry, dict) else None)
        except (ValueError, TypeError) as exc:
            log.warning("tvmconv: dropping entry %s of %s: not a valid spec (%s)", key, p, exc)
            bad.append(key)
            continue
        if cache.tuned_record(spec, tgt) is None:
            out.append((spec, 1))
    if bad:
        _update(profile, _dropping(bad))
    return out


def command(profile: str) -> str:
    """The one command that tunes every workload on ``profile``'s list."""
    return f"tvmconv tune --untuned --target {profile}"


def report() -> None:
    """At the end of the process: where it used more than one untuned workload, one warning that
    lists those still untuned, with the command per profile (one, as a rule) that tunes them."""
    from ..backends.target import resolve

    used = seen()
    if len(used) < 2:
        return  # (the one there was was warned about when it was built)
    by_profile: dict[str, list[Spec]] = {}
    for profile, spec in used:
        try:
            if cache.tuned_record(spec, resolve(profile)) is not None:
                continue  # tuned since, in this process
        except Exception:  # noqa: BLE001 - at exit: a profile gone or a cache unreadable still lists it
            pass
        by_profile.setdefault(profile, []).append(spec)
    if not by_profile:
        return
    total = sum(map(len, by_profile.values()))
    lines = [f"tvmconv: {total} workload(s) ran with their default schedule (no tuned schedule) in this process:"]
    for profile, specs in by_profile.items():
        lines += [f"  on {profile} ({len(specs)}):"] + [f"    {s.name}" for s in specs]
    lines.append("Tune them all (with any others that ran untuned on this machine; each leaves the list once "
                 "tuned) with:")
    lines += [f"    {command(profile)}" for profile in by_profile]
    log.warning("\n".join(lines))
