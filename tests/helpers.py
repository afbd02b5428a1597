"""Helpers shared by the tests: in-process replay and record access."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.capture.files import CaptureReader
from monitor.eve import EveWriter
from monitor.pipeline import Pipeline

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"


def replay(paths: Sequence[str | Path], out: Path, **kwargs: Any) -> tuple[list[dict[str, Any]],
                                                                            Pipeline]:
    """Replay ``paths`` through a fresh pipeline; return its EVE records and the pipeline."""
    eve_path = out / "eve.json"
    if eve_path.exists():
        eve_path.unlink()
    warnings: list[str] = []
    reader = CaptureReader([str(p) for p in paths], warn=warnings.append)
    eve = EveWriter(str(eve_path))
    pipe = Pipeline(eve=eve, **kwargs)
    for batch in reader:
        pipe.process(batch)
    pipe.finish()
    eve.close()
    pipe.warnings = warnings  # type: ignore[attr-defined]
    records = [json.loads(line) for line in eve_path.read_text().splitlines()]
    return records, pipe


def internet_checksum(data: bytes) -> int:
    """RFC 1071's checksum, word by word with end-around carry (an odd length is padded
    with a zero byte): the reference the tests build and check packets with. Over data
    that holds a correct checksum it is 0."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += int.from_bytes(data[i:i + 2], "big")
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def flows(records: list[dict[str, Any]], proto: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == "flow"
            and (proto is None or r["proto"] == proto)]
