"""The optional compiled build of gripd (all metadata lives in pyproject.toml).

``GRIPD_MYPYC=1 pip install .`` compiles the modules in ``COMPILED`` with mypyc into C extension
modules that sit beside their ``.py`` files (Python imports an extension before a source file of
the same name). They are the modules every request, publish and delivery runs through; all are
``mypy --strict`` clean, so mypyc can compile them without changing what they do. The compiled
build uses about 40 % less CPU per proxied request (see docs/compiled.md).

- Unset or ``0``: the pure-Python package (the default; nothing extra is fetched).
- ``1``: compile; if that is not possible (no C compiler, no Python headers, mypy rejects a
  module) the build says why on stderr and installs the pure-Python package, which behaves the
  same.
- ``require``: compile or fail the install.

``GRIPD_MYPYC_MODULES`` (comma-separated paths under ``gripd/``) replaces the list, for
measuring one module's effect; ``GRIPD_MYPYC_OPT`` sets the C optimisation level (0 to 3,
default 3).
``GRIPD_MYPYC_SPLIT=1`` writes one C file per module and compiles them in parallel: about three
times faster to build on two cores (50 s against 2.5 minutes), and no faster to run, perhaps a
few per cent slower (the C compiler no longer inlines across modules); the test script uses it.
"""

from __future__ import annotations

import os
import sys
import tomllib
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("GRIPD_MYPYC", "0").strip().lower()
if MODE not in ("", "0", "1", "require"):
    sys.exit(f"GRIPD_MYPYC must be 0, 1 or require, not {MODE!r}")
MYPYC = MODE in ("1", "require")
REQUIRE = MODE == "require"
SPLIT_MODE = os.environ.get("GRIPD_MYPYC_SPLIT", "0").strip()
if SPLIT_MODE not in ("", "0", "1"):
    sys.exit(f"GRIPD_MYPYC_SPLIT must be 0 or 1, not {SPLIT_MODE!r}")
SPLIT = SPLIT_MODE == "1"
OPT = os.environ.get("GRIPD_MYPYC_OPT", "3").strip()
if OPT not in ("0", "1", "2", "3"):
    sys.exit(f"GRIPD_MYPYC_OPT must be 0, 1, 2 or 3, not {OPT!r}")

# The mypy (and so mypyc) the sources are checked with: a newer one may check differently.
MYPY_PIN = "mypy==2.4.1"

COMPILED = [
    # gripd.core: pure (no I/O), the GRIP and HTTP decisions.
    "core/headers.py",
    "core/http.py",
    "core/forward.py",
    "core/dispatch.py",
    "core/requestcheck.py",
    "core/requestlog.py",
    "core/routes.py",
    "core/instruct.py",
    "core/sig.py",
    "core/cors.py",
    "core/publish.py",
    "core/itemwire.py",
    "core/itemjson.py",
    "core/sequencer.py",
    "core/interest.py",
    "core/registry.py",
    "core/history.py",
    "core/filters.py",
    "core/stats.py",
    "core/qtcompat.py",
    "core/wildcard.py",
    # gripd.io and the application object: the per-request and per-delivery paths.
    "io/handler/proxy.py",
    "io/handler/engine.py",
    "io/handler/holds.py",
    "io/handler/fanout.py",
    "io/handler/pipeline.py",
    "io/handler/channels.py",
    "io/inputs/control_http.py",
    "io/inputs/control_wire.py",
    "io/inputs/zmq.py",
    "io/listener/client.py",
    "io/listener/client_writes.py",
    "io/listener/flusher.py",
    "io/listener/request.py",
    "io/observe/ticklog.py",
    "io/observe/stats.py",
    "io/observe/events.py",
    "io/observe/metrics.py",
    "io/handler/history.py",
    "io/origin/http.py",
    "io/origin/connection.py",
    "io/origin/endpoint.py",
    "io/bus/local.py",
    "runtime/app.py",
]
# The rest is not compiled: not on a per-request path, or not measured yet.


def _compile_in_parallel(
    self: Any,
    sources: list[str],
    output_dir: str | None = None,
    macros: Any = None,
    include_dirs: Any = None,
    debug: bool = False,
    extra_preargs: Any = None,
    extra_postargs: Any = None,
    depends: Any = None,
) -> list[str]:
    """``CCompiler.compile`` with the sources compiled at once, one compiler process per core
    (distutils compiles the sources of one extension one after the other)."""
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs
    )
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj: str) -> None:
        src, ext = build[obj]
        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, objects))
    return list(objects)


class OptionalBuildExt(build_ext):
    """Build the extensions if possible; with ``GRIPD_MYPYC=1`` fall back to pure Python."""

    def build_extensions(self) -> None:
        if SPLIT:
            self.compiler.compile = types.MethodType(_compile_in_parallel, self.compiler)
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # CompileError, DistutilsPlatformError, missing headers, ...
            if REQUIRE:
                raise
            self._give_up(e)

    def _give_up(self, e: BaseException) -> None:
        print(f"gripd: the compiled build failed ({e}); installing pure Python", file=sys.stderr)
        # A partial build must not be shipped: one compiled module imports the others' C code.
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.remove(path)
        self.extensions = []


def ext_modules() -> list[Extension]:
    if not MYPYC:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if REQUIRE and "egg_info" not in sys.argv:
            raise
        # Also seen while pip asks for the build requirements, before mypy is installed.
        print("gripd: mypy is not installed (yet): pure Python", file=sys.stderr)
        return []
    chosen = os.environ.get("GRIPD_MYPYC_MODULES")
    names = [m.strip() for m in chosen.split(",")] if chosen else COMPILED
    try:
        return list(
            mypycify(
                [f"gripd/{m}" for m in names],
                opt_level=OPT,
                multi_file=SPLIT,
            )
        )
    except (Exception, SystemExit) as e:  # mypy's type errors end in SystemExit
        if REQUIRE:
            raise
        print(f"gripd: mypyc rejected the sources ({e}): pure Python", file=sys.stderr)
        return []


def build_requires() -> list[str]:
    """mypy, plus gripd's own dependencies: mypy must see the libraries the compiled modules
    import with their real types, as ``mypy --strict`` does in development."""
    if not MYPYC:
        return []
    meta = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())
    return [MYPY_PIN, *meta["project"]["dependencies"]]


setup(
    ext_modules=ext_modules(),
    cmdclass={"build_ext": OptionalBuildExt},
    # setuptools' PEP 517 backend installs these in the isolated build environment.
    setup_requires=build_requires(),
)
