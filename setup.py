"""The compiled kernels (monitor/_kernels.pyx, _decode.pyx, _flows.pyx), built by Cython;
everything else about the package is declared in pyproject.toml."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent


def kernel(name: str) -> Extension:
    """``monitor.<name>`` from ``monitor/<name>.pyx``, which knows the SHA-256 of the source
    it was built from (tests/test_kernels.py catches a stale build)."""
    source = f"monitor/{name}.pyx"
    digest = hashlib.sha256((HERE / source).read_bytes()).hexdigest()
    return Extension(f"monitor.{name}", [source],
                     define_macros=[("AVMON_KERNELS_SHA256", f'"{digest}"')],
                     extra_compile_args=["-O2"])


setup(ext_modules=cythonize([kernel("_kernels"), kernel("_decode"), kernel("_flows")],
                             language_level=3))
