"""Builds the Cython hot path (ext/) into the ingest package.

INGEST_DEBUG=1 builds with Cython annotations, line tracing and bounds checks,
for profiling and fuzzing; the default build is optimised and warning-free
under -Wall.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("INGEST_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "linetrace": DEBUG,
}
macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
cflags = ["-Wall", "-O0", "-g"] if DEBUG else ["-Wall", "-O3"]

extensions = [
    Extension(
        f"ingest.hotpath.{name}",
        [f"ext/ingest/hotpath/{name}.pyx"],
        extra_compile_args=cflags,
        define_macros=macros,
    )
    for name in ("_buffer", "_encoder")
    # INGEST_BUILD_ONLY=_encoder rebuilds one module while working on it
    if os.environ.get("INGEST_BUILD_ONLY", name) == name
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],  # ext/ mirrors the package, so each .pyx finds its .pxd
        compiler_directives=directives,
        annotate=DEBUG,
    ),
)
