"""Counter-based random numbers: pure functions of an integer key, no generator state.

Planners and models that run inside a compiled graph draw their randomness here: a
``torch.Generator`` cannot be traced by ``torch.compile`` (dynamo: "Failed to convert
args/kwargs to proxy"), while these are plain vectorised integer arithmetic. They give
the same numbers eager and compiled, and make a run reproducible from its seed and a
draw count (MPPI's noise: seed and step; the ensemble's TS1 member assignment: seed and
model call). Not a general-purpose random number generator: the hash is a fast 32-bit
mixer, good enough for sampling-based planning.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (int64 holding values < 2**32; products stay < 2**63)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & MASK32
    return (x >> 16) ^ x


def counter_bits(key: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` distinct 32-bit hashes (int64) of (index, ``key``), ``key`` a 0-d int64 tensor."""
    index = torch.arange(count, dtype=torch.int64, device=key.device)
    return mix32(index ^ mix32((key & MASK32) ^ 0x5BD1E995))


def counter_gaussian(key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise that is a pure function of an integer ``key`` tensor (0-d int64).

    Each pair of normals is one 32-bit hash of (element index, key), split into two
    16-bit uniforms and turned into normals by Box-Muller (inductor's own random
    kernels are scalar and about 10x slower on a CPU, and eager ``torch.randn`` is
    serial). The 16-bit uniforms cap |z| at 4.7 (a 3e-6 tail), harmless for sampling.
    """
    count = math.prod(shape)
    bits = counter_bits(key, (count + 1) // 2)
    u1 = ((bits >> 16).to(dtype) + 1.0) * (1.0 / 65536.0)  # (0, 1]: log stays finite
    angle = (bits & 0xFFFF).to(dtype) * (2.0 * math.pi / 65536.0)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    normals = torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)))
    return normals[:count].reshape(shape)


def counter_permutation(key: torch.Tensor, n: int) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64) that is a pure function of ``key`` (0-d int64): the order
    of ``n`` distinct hashes (the hash is bijective on 32 bits, so there are no ties for n <= 2**32)."""
    return torch.argsort(counter_bits(key, n))
