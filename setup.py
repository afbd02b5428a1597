"""The compiled kernels (monitor/_kernels.pyx), built by Cython; everything else about
the package is declared in pyproject.toml."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = "monitor/_kernels.pyx"
digest = hashlib.sha256(Path(__file__).with_name("monitor").joinpath("_kernels.pyx")
                        .read_bytes()).hexdigest()

setup(
    ext_modules=cythonize(
        [Extension("monitor._kernels", [SOURCE],
                   define_macros=[("AVMON_KERNELS_SHA256", f'"{digest}"')],
                   extra_compile_args=["-O2"])],
        language_level=3,
    ),
)
