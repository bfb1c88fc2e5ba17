"""Builds nextn's native CPU kernels (nextn.kernels._native) on `pip install`; everything else is in
pyproject.toml. Plain C++17 against the CPython API: no torch or other headers are needed to build."""

import platform

from setuptools import Extension, setup

CSRC = "nextn/kernels/csrc/"
args = ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden", "-pthread",
        "-Wno-maybe-uninitialized"]
if platform.system() == "Darwin":
    args.append("-Wno-unknown-pragmas")

setup(ext_modules=[Extension(
    "nextn.kernels._native",
    sources=[CSRC + f for f in ("module.cpp", "pool.cpp", "isa_avx512.cpp", "isa_avx2.cpp", "isa_generic.cpp")],
    depends=[CSRC + f for f in ("ops.h", "pool.h", "simd.h", "quants.h", "idot.h", "pvec.h", "kernels.inc", "packed.inc")],
    extra_compile_args=args, extra_link_args=["-pthread"], language="c++",
)])
