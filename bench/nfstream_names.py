"""nfstream's answer for bench/run: one line per flow that nDPI named, ``APP<TAB>NAME``.

Runs in the bench-only environment (``bench/.venv-nfstream``, made by ``bench/run``), not
in avmon's: nfstream is a peer measured against, not a dependency.

    python bench/nfstream_names.py CAPTURE
"""

from __future__ import annotations

import sys

from nfstream import NFStreamer


def main() -> int:
    streamer = NFStreamer(source=sys.argv[1], statistical_analysis=False)
    out = sys.stdout
    for flow in streamer:
        if flow.requested_server_name:
            app = flow.application_name or ""
            out.write(f"{app}\t{flow.requested_server_name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
