"""The optional native data path (natsrv/_fastpath.c): built when a C compiler and the
Python headers are there, skipped otherwise (the pure-Python path is complete)."""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):  # recvmmsg/sendmmsg
    ext_modules.append(
        Extension(
            "natsrv._fastpath",
            ["natsrv/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
