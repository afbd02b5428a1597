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
