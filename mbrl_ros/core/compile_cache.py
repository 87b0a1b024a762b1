"""Where ``torch.compile`` keeps what it compiled, so a later start of the controller reuses it.

A first compile of a planning step takes seconds to minutes on a small CPU: most of
it in inductor (code generation and the C++ compiler), the rest in tracing (dynamo).
Inductor's FX graph cache and AOTAutograd's cache store the compiled graphs on disk,
keyed by the traced graph, the inputs' shapes and dtypes and torch's version; a later
process that traces the same graph loads them instead of compiling (tracing still runs).
Torch keeps them in ``TORCHINDUCTOR_CACHE_DIR``, by default under ``/tmp``, which a
reboot or a container restart loses. ``use_compile_cache`` points it at a directory
the stack owns (a planner's ``compile_cache``), and ``compile_cache_counters`` reads
how many graphs came from the cache in this process.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["use_compile_cache", "compile_cache_counters"]


def use_compile_cache(directory: str | os.PathLike) -> Path:
    """Keep this process's compiled graphs in ``directory`` (created if missing) and turn the caches on.

    Process-wide, like torch's own setting; call it before the first compile."""
    path = Path(directory).expanduser().resolve()
    if any(c.isspace() for c in str(path)):
        # Seen with torch 2.13: inductor's C++ compile of a graph under such a directory fails, and the
        # planner falls back to eager at every start.
        raise ValueError(f"compile_cache: {str(path)!r} holds whitespace, which torch's C++ compile of the "
                         "cached graphs does not survive; choose a directory without")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"compile_cache: cannot create the directory {str(path)!r}: {err}") from err
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    return path


def compile_cache_counters() -> dict[str, int]:
    """This process's cache hits and misses so far: inductor's FX graphs and AOTAutograd's entries."""
    from torch._dynamo.utils import counters

    return {
        "fxgraph_cache_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fxgraph_cache_miss": int(counters["inductor"]["fxgraph_cache_miss"]),
        "autograd_cache_hit": int(counters["aot_autograd"]["autograd_cache_hit"]),
        "autograd_cache_miss": int(counters["aot_autograd"]["autograd_cache_miss"]),
    }
