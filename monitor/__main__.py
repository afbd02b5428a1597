"""The ``avmon`` command's entry point (also ``python -m monitor``).

Start-up imports make objects that live as long as the process (modules, classes,
functions, tables: some 42,000 that the cyclic collector tracks). While they are being
made, the collector examines them again and again (about 70 collections) and finds
nothing to free: 25-50 ms of every start on the benchmark machine. It is paused for the
imports, and what they made is then frozen out of collection (:func:`gc.freeze`): the
first collection after them walked it all and found next to nothing (20-25 ms).
Everything after runs with the collector as :mod:`monitor.gcpolicy` sets it.
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
        gc.freeze()
        if was_enabled:
            gc.enable()
    cli.run()


if __name__ == "__main__":
    run()
