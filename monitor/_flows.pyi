import numpy as np
import numpy.typing as npt

SOURCE_SHA256: str

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

def group(ah: _U64, al: _U64, bh: _U64, bl: _U64, pa: _U64, pb: _U64, pr: _U64, depth: int,
          swap: npt.NDArray[np.uint8], pure_syn: npt.NDArray[np.uint8],
          flags: npt.NDArray[np.uint8], wl: _I64, ts: _I64, min_idle: int
          ) -> tuple[_I64, _I64, _I64, _I64, _I64, _I64, npt.NDArray[np.bool_]] | None: ...
