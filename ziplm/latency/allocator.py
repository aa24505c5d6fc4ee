"""The memory allocator is part of the timing environment: which one this process runs with, and whether
``ziplm`` should restart itself under tuned glibc malloc before timing anything.

With glibc's default malloc the same model times differently in a fresh process (which returns freed
activation memory to the OS and page-faults it back on the next forward) and in a long-running one
(whose heap stays mapped): a latency table measured early in ``ziplm run`` then mispredicts the members
timed later. Telling glibc never to trim the heap and never to serve large blocks by ``mmap`` makes both
regimes alike (table predictions within a few % of members timed later) and the dense model ~12% faster.

Pure stdlib and import-light: ``ziplm``'s entry point reads it before anything else is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

TUNED_GLIBC = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295"
"""``GLIBC_TUNABLES`` under which ``ziplm`` times by default: the heap is never trimmed, large blocks never mmap'd."""

ALLOCATOR_ENV = "ZIPLM_ALLOCATOR"
"""The user's choice: ``system`` (or ``default``) times under glibc's defaults instead of :data:`TUNED_GLIBC`."""

OPT_OUT = frozenset({"system", "default"})

REEXEC_MARKER = "ZIPLM_ALLOCATOR_REEXEC"
"""Set in the environment of the restarted process, so that it never restarts again."""

TIMING_COMMANDS = frozenset({"run", "prune", "latency", "serve-bench", "compress"})
"""Commands that time models (latency tables, members, serving); the others gain nothing from a restart."""

_PRELOADED = {"libjemalloc": "jemalloc", "libtcmalloc": "tcmalloc", "libmimalloc": "mimalloc"}


def _tunables(value: str) -> dict[str, str]:
    """``a=1:b=2`` as ``{"a": "1", "b": "2"}`` (glibc's own syntax)."""
    pairs = (item.partition("=") for item in value.split(":") if item)
    return {key: val for key, _, val in pairs}


def _preloaded_malloc(environ: Mapping[str, str]) -> str | None:
    """The malloc library ``LD_PRELOAD`` names (jemalloc, tcmalloc, mimalloc), if any."""
    preload = environ.get("LD_PRELOAD", "")
    return next((name for lib, name in _PRELOADED.items() if lib in preload), None)


def _on_glibc(libc: str | None) -> bool:
    """Linux with glibc (``libc``: what ``platform.libc_ver()`` says, given by tests)."""
    if libc is None:
        libc = platform.libc_ver()[0] if sys.platform.startswith("linux") else ""
    return libc == "glibc"


def current_allocator(environ: Mapping[str, str] | None = None, *, libc: str | None = None) -> str:
    """The allocator this process times with, as recorded in latency fingerprints and provenance.

    ``jemalloc`` / ``tcmalloc`` / ``mimalloc`` (preloaded), ``glibc-tuned`` (:data:`TUNED_GLIBC` in
    ``GLIBC_TUNABLES``), ``glibc-custom:<tunables, sorted>`` (any other), ``glibc-default``, or ``system`` off glibc.

    Args:
        environ: the environment the process started with (default: ``os.environ``).
        libc: the C library's name (default: detected); tests pass ``"glibc"`` or ``""``.
    """
    env = os.environ if environ is None else environ
    preloaded = _preloaded_malloc(env)
    if preloaded is not None:
        return preloaded
    if not _on_glibc(libc):
        return "system"
    tunables = env.get("GLIBC_TUNABLES", "")
    if not tunables:
        return "glibc-default"
    wanted = _tunables(TUNED_GLIBC)
    given = _tunables(tunables)
    if given == wanted:
        return "glibc-tuned"
    # The settings themselves are the label: two different custom regimes must not share a cached table.
    return "glibc-custom:" + ":".join(f"{key}={val}" for key, val in sorted(given.items()))


def _command(argv: Sequence[str]) -> str:
    """The command ``ziplm argv`` runs, as ``ziplm.__main__.main`` picks it: none named is the default, ``run``.

    (``ziplm.commands.DEFAULT_COMMAND``; the latency layer may not import the command table, a test checks both.)
    """
    first = argv[0] if argv else ""
    if not first or first.startswith("-") or "=" in first or first.startswith("~"):
        return "run"
    return first


def reexec_args_for_allocator(
    argv: Sequence[str], environ: Mapping[str, str], *, libc: str | None = None
) -> dict[str, str] | None:
    """The environment to restart ``ziplm argv`` in under tuned glibc malloc, or ``None`` to run as is.

    A restart is needed because glibc reads ``GLIBC_TUNABLES`` only at process start. It happens only
    on Linux with glibc, for a command that times models (not ``--help``), when the user chose no
    allocator (no ``GLIBC_TUNABLES``, no preloaded malloc, ``ZIPLM_ALLOCATOR`` not ``system``) and
    this is not already the restarted process (:data:`REEXEC_MARKER`).
    """
    if "-h" in argv or "--help" in argv or _command(argv) not in TIMING_COMMANDS:
        return None
    if not _on_glibc(libc) or environ.get(REEXEC_MARKER):
        return None
    if environ.get(ALLOCATOR_ENV, "").strip().lower() in OPT_OUT:
        return None
    if environ.get("GLIBC_TUNABLES") or _preloaded_malloc(environ) is not None:
        return None  # the user's own choice: respected, and recorded by current_allocator()
    return {**environ, "GLIBC_TUNABLES": TUNED_GLIBC, REEXEC_MARKER: "1"}


_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "--check-hash-based-pycs"})


def interpreter_options(orig_argv: Sequence[str]) -> list[str]:
    """The interpreter's own options in ``sys.orig_argv`` (``-u``, ``-X dev``, ``-W error`` …), to keep on restart.

    They stop at the script, ``-m`` or ``-c``: ``python -u -m ziplm run`` gives ``["-u"]``, the console
    script (``python /venv/bin/ziplm run``) gives ``[]``.
    """
    options: list[str] = []
    rest = list(orig_argv[1:])
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c", "-"):
        option = rest.pop(0)
        options.append(option)
        if option in _OPTIONS_WITH_VALUE and rest:
            options.append(rest.pop(0))
    return options
