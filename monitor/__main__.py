"""The ``avmon`` command's entry point (also ``python -m monitor``).

Start-up imports make objects that live as long as the process (modules, classes,
functions, tables: some 42,000 that the cyclic collector tracks). While they are being
made, the collector examines them again and again (about 70 collections) and finds
nothing to free: 25-50 ms of every start on the benchmark machine. It is paused for the
imports, and what they made is then frozen out of collection (:func:`gc.freeze`): the
first collection after them walked it all and found next to nothing (20-25 ms).
Everything after runs with the collector as :mod:`monitor.gcpolicy` sets it.

numpy's OpenBLAS starts a thread per core when numpy is imported (numpy's import itself
multiplies two matrices as a check), and an idle OpenBLAS thread spins for a while before
it sleeps: about 0.1 s of a core in every run, taken from replay workers on a two-core
machine. avmon does no linear algebra, so the command asks for one BLAS thread (unless
``OPENBLAS_NUM_THREADS`` is set already).
"""

from __future__ import annotations

import gc
import os


def run() -> None:
    """Import the command line with the collector paused, then run it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
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
