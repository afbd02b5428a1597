"""Reloading a running pipeline's configuration, signatures and geo databases (SIGHUP).

:func:`reload_pipeline` loads the configuration file, the signature set it names and, if
the ``[geo]`` paths changed, the geo databases it names, all before touching the
pipeline. If any of them is invalid, nothing changes: the pipeline goes on with what it
had and the result carries the one-line error (file, key, problem). Otherwise the new
objects are put in place by single reference assignments.

The reload is meant to run in the packet loop's own thread, between two batches, never
inside a signal handler: the SIGHUP handler only calls :meth:`ReloadRequest.request`,
and the loop calls :func:`reload_pipeline` when :meth:`ReloadRequest.pending` says so.
The metrics thread may read the pipeline at any time; the assignments are ordered so
that each reference it reads is complete (``pipe.config``, which it reads policy and
segments from together, is replaced last, in one step).

A rejected reload is the caller's to count: the live command adds one to
``PipelineCollector.config_reload_errors`` (``avmon_config_reload_errors_total``) for
every result whose ``ok`` is False.

Flows already identified keep the attribution they were given; flows identified after
the reload use the new signature set, segments and policy. Settings that shape the flow
table or the alert sinks (``[flow]``, ``[alertmanager]``, ``[syslog]``) are read at start
only; a reload that changes them says so in its message.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

import msgspec

from geo import GeoDatabases, GeoError
from monitor.config import Config, load_config
from monitor.errors import ConfigError
from monitor.policy import SegmentMap
from signatures import SignatureError, SignatureSet, load_signature_set

if TYPE_CHECKING:
    from monitor.pipeline import Pipeline

__all__ = ["RESTART_ONLY", "ReloadRequest", "ReloadResult", "reload_pipeline"]

#: Config sections read only when the sensor starts (changing them needs a restart).
RESTART_ONLY: Final = ("flow", "alertmanager", "syslog")


class ReloadResult(msgspec.Struct, frozen=True):
    """What a reload did.

    ``ok`` False: nothing was changed and ``message`` is the one-line error. ``ok`` True:
    ``message`` summarises the running configuration and ``changed`` names what differs
    from before, among ``signatures``, ``segments``, ``policy``, ``geo`` (new paths) and
    ``geo:<database>`` (a file replaced on disk at the same path).
    """

    ok: bool
    message: str
    changed: tuple[str, ...] = ()


class ReloadRequest:
    """A reload asked for by a signal, picked up by the packet loop.

    :meth:`request` only sets a flag, so it is safe to call from a signal handler;
    :meth:`pending` reads and clears it. Several requests before the loop looks count
    as one.
    """

    __slots__ = ("_flag",)

    def __init__(self) -> None:
        self._flag = False

    def request(self) -> None:
        """Ask for a reload (async-signal-safe: one attribute store)."""
        self._flag = True

    def pending(self) -> bool:
        """Whether a reload was requested since the last call; clears the request."""
        flag = self._flag
        if flag:
            self._flag = False
        return flag

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """A ``signal.signal`` handler that requests a reload."""
        self.request()

    def install(self, signum: int = signal.SIGHUP) -> None:
        """Make ``signum`` (default SIGHUP) request a reload."""
        signal.signal(signum, self.handler)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _open_geo(config: Config, auto_reload_seconds: float | None) -> GeoDatabases:
    g = config.geo
    return GeoDatabases(country_db=g.country_db, registration_db=g.registration_db,
                        asn_db=g.asn_db, registry=g.registry,
                        auto_reload_seconds=auto_reload_seconds)


def reload_pipeline(pipe: Pipeline, config_path: str | Path | None, *,
                    geo_auto_reload_seconds: float | None = None) -> ReloadResult:
    """Reload ``pipe``'s configuration from ``config_path`` (None: the defaults).

    Loads the configuration, the signature set it names and (when the ``[geo]`` paths
    differ from the running ones) the geo databases, and only if all three load, puts
    them in place. When the geo paths are unchanged the running databases are asked to
    reload any file replaced on disk instead. ``geo_auto_reload_seconds`` is given to
    newly opened geo databases (as ``auto_reload_seconds``). Never raises for a bad
    file: the problem is in the result.
    """
    old_config = pipe.config
    old_geo = pipe.alerts.geo
    try:
        config = load_config(config_path)
        sigs: SignatureSet = load_signature_set(config.signatures)
        geo_paths_changed = config.geo != old_config.geo
        new_geo = _open_geo(config, geo_auto_reload_seconds) if geo_paths_changed else None
    except (ConfigError, SignatureError, GeoError) as exc:
        return ReloadResult(False, _one_line(str(exc)))
    except OSError as exc:  # e.g. a directory the (unprivileged) sensor cannot list
        where = f"{exc.filename}: " if exc.filename else ""
        return ReloadResult(False, _one_line(f"{where}{exc.strerror or exc}"))

    changed: list[str] = []
    if sigs.version != pipe.signatures.version:
        changed.append("signatures")
    if config.segments != old_config.segments:
        changed.append("segments")
    if config.policy != old_config.policy:
        changed.append("policy")
    segments = SegmentMap(config.segments)

    # Everything is loaded: swap, each step one reference assignment. The geo databases
    # and signatures first (lookups only), then segments and policy, and pipe.config,
    # which the metrics thread reads whole, last.
    if new_geo is not None:
        pipe.alerts.geo = new_geo
        changed.append("geo")
    pipe.signatures = sigs
    pipe.alerts.segments = segments
    pipe.alerts.config = config
    pipe.config = config

    # The old databases are not closed: the metrics thread may be reading their
    # descriptions; they are released with the last reference.
    if new_geo is None:
        reload_files = getattr(old_geo, "reload_if_changed", None)
        if callable(reload_files):
            changed.extend(f"geo:{name}" for name in reload_files())

    restart = [name for name in RESTART_ONLY if _section(config, name) !=
               _section(old_config, name)]
    where = str(config.path) if config.path is not None else "built-in defaults"
    message = (f"reloaded {where}: signatures {sigs.version} ({len(sigs.vendors)} vendors), "
               f"{len(config.segments)} segment(s), {len(config.policy.rules)} rule(s); "
               f"changed: {', '.join(changed) if changed else 'nothing'}")
    if restart:
        message += f"; not applied until restart: {', '.join(restart)}"
    return ReloadResult(True, message, tuple(changed))


def _section(config: Config, name: str) -> object:
    if name == "flow":
        return (config.timeouts, config.max_flows, config.community_id_seed)
    return getattr(config, name)
