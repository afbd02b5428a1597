from collections.abc import Callable

import numpy as np
import numpy.typing as npt

SOURCE_SHA256: str

def decode_layer(buf: bytes | bytearray | memoryview, off: npt.NDArray[np.int64],
                 end: npt.NDArray[np.int64], lt: npt.NDArray[np.int32],
                 nflog: Callable[[int, int], tuple[int, int]] | None
                 ) -> dict[str, npt.NDArray[np.generic]] | None: ...
