from collections.abc import Callable

import numpy as np
import numpy.typing as npt

SOURCE_SHA256: str

def decode_layer(buf: bytes | bytearray | memoryview, off: npt.NDArray[np.int64],
                 end: npt.NDArray[np.int64], lt: npt.NDArray[np.int32],
                 nflog: Callable[[int, int], tuple[int, int]] | None
                 ) -> dict[str, npt.NDArray[np.generic]] | None: ...
def tunnels(buf: bytes | bytearray | memoryview, index: npt.NDArray[np.int64],
            reason: npt.NDArray[np.uint8], frag: npt.NDArray[np.uint8],
            proto: npt.NDArray[np.uint8], sport: npt.NDArray[np.uint16],
            dport: npt.NDArray[np.uint16], payoff: npt.NDArray[np.int64],
            paylen: npt.NDArray[np.int64]
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
                       npt.NDArray[np.int32]]: ...
