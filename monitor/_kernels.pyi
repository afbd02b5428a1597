from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

SOURCE_SHA256: str

_T = TypeVar("_T")

def walk_pcap(buf: bytes, pos: int, big_endian: bool, cap_max: int, frac_ns: int
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
                         npt.NDArray[np.int64], int]: ...
def client_hello(data: bytes | bytearray | memoryview, cls: type[_T]) -> _T | None: ...
def dns_message(raw: bytes, strict: bool, message_cls: type[_T], question_cls: type[Any],
                answer_cls: type[Any], type_name: Any, address_text: Any,
                max_questions: int, max_answers: int, max_records: int) -> _T | None: ...
def eve_time(ns: int) -> str: ...
def quic_long_headers(data: bytes | memoryview, versions: dict[int, tuple[Any, ...]],
                      cls: type[_T], initial: Any, retry: Any, max_packets: int,
                      max_cid: int) -> list[_T] | None: ...
def quic_frames(payload: bytes, padding_cls: type[Any], ping_cls: type[Any],
                ack_cls: type[Any], crypto_cls: type[Any], close_cls: type[Any],
                max_frames: int, max_ack_ranges: int) -> tuple[Any, ...] | None: ...
