"""Builds the Cython hot path (ext/) into the ingest package.

INGEST_DEBUG=1 builds with Cython annotations, line tracing and bounds checks,
for profiling and fuzzing; the default build is optimised and warning-free
under -Wall.
"""
import os
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

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

HOTPATH = "ext/ingest/hotpath"
# cimported and included by the .pyx files, and shipped beside the compiled modules so others can cimport them
HEADERS = sorted(glob(f"{HOTPATH}/*.pxd") + glob(f"{HOTPATH}/*.pxi"))
# a change to any of these rebuilds the extensions (and they go in the sdist): the headers and the encoder include files
depends = HEADERS + sorted(glob(f"{HOTPATH}/encoder/*"))

extensions = [
    Extension(
        f"ingest.hotpath.{name}",
        [f"{HOTPATH}/{name}.pyx"],
        depends=depends,
        include_dirs=[HOTPATH],  # for encoder/platform.h
        extra_compile_args=cflags,
        define_macros=macros,
    )
    for name in ("_buffer", "_encoder")
    # INGEST_BUILD_ONLY=_encoder rebuilds one module while working on it
    if os.environ.get("INGEST_BUILD_ONLY", name) == name
]


class build_py_with_pxd(build_py):
    """Ships the .pxd files (and the .pxi they include) beside the compiled
    modules, so other Cython code can cimport ingest.hotpath._buffer,
    ._encoder and ._growbuf; the .pyi stubs are package data already."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the source tree, ext/ included
            return
        target = os.path.join(self.build_lib, "ingest", "hotpath")
        self.mkpath(target)
        for path in HEADERS:
            self.copy_file(path, os.path.join(target, os.path.basename(path)))


setup(
    cmdclass={"build_py": build_py_with_pxd},
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],  # ext/ mirrors the package, so each .pyx finds its .pxd
        compiler_directives=directives,
        annotate=DEBUG,
    ),
)
