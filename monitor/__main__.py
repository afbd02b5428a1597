"""The ``avmon`` command's entry point (also ``python -m monitor``).

Start-up imports make objects that live as long as the process (modules, classes,
functions, tables: some 42,000 that the cyclic collector tracks). While they are being
made, the collector examines them again and again (about 70 collections) and finds
nothing to free: 25-50 ms of every start on the benchmark machine. It is paused for the
imports; everything after them runs with the collector as :mod:`monitor.gcpolicy` sets
it.
"""

from __future__ import annotations

import gc


def run() -> None:
    """Import the command line with the collector paused, then run it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        from monitor import cli
    finally:
        if was_enabled:
            gc.enable()
    cli.run()


if __name__ == "__main__":
    run()
