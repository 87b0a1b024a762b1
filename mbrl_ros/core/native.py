"""casadi Functions compiled to C by the machine's compiler, cached on disk, called without copies.

A solver whose inner loop is hundreds of numpy calls on 5x5 matrices (iLQR's
backward pass, its closed-loop rollouts) spends its time in per-call overhead, not
arithmetic. Written once as a casadi expression (``Function.mapaccum`` keeps the
loop over time steps a loop, so the C stays small) and generated to C, the whole
loop is one call of a few microseconds.

``compile_function`` generates the C, and compiles it with ``$CC`` (else ``gcc``,
else ``cc``) into ``directory`` unless a library of the same source is there
already: the file name holds a hash of the source, casadi's version and the
compiler's flags, so a later start (or another process) loads what an
earlier one compiled, in milliseconds, without a compiler. Written under a temporary name and renamed,
so concurrent starts never load a half-written file. ``NativeUnavailable`` says why
not (no compiler, a directory that cannot be written, a compile error): the caller
keeps its numpy path.

``BufferedFunction`` calls a compiled Function through casadi's ``Function.buffer``
on numpy arrays it owns (C order, so an input of shape ``(m, N)`` in casadi is an
array ``[N, m]``): about a microsecond per call, against tens for a call on numpy
arguments, which converts each of them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import casadi as ca
import numpy as np

__all__ = ["NativeUnavailable", "compile_function", "BufferedFunction", "compiler"]

# -ffp-contract=off: no fused multiply-adds, so results round as numpy's do.
FLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off")


class NativeUnavailable(RuntimeError):
    """Why a Function could not be compiled or loaded; the caller falls back."""


def compiler() -> str | None:
    """The C compiler: ``$CC`` where set (a command on PATH or a path), else ``gcc``, else ``cc``; None if none."""
    name = os.environ.get("CC")
    if name:
        return shutil.which(name)
    return shutil.which("gcc") or shutil.which("cc")


def compile_function(function: ca.Function, directory: str | os.PathLike) -> ca.Function:
    """``function`` as compiled C, from ``directory``'s cache or compiled into it now."""
    name = function.name()
    with tempfile.TemporaryDirectory(prefix="mbrl_ros_native_") as scratch:
        source = Path(scratch) / f"{name}.c"
        try:
            generator = ca.CodeGenerator(source.name, {"with_header": False})
            generator.add(function)
            generator.generate(f"{scratch}/")
            text = source.read_bytes()
            directory = Path(directory).expanduser()  # RuntimeError without a home directory
        except (RuntimeError, OSError) as err:
            raise NativeUnavailable(f"cannot generate {name}.c into {str(directory)!r}: {err}") from err
        key = hashlib.sha256(b"\0".join([text, ca.__version__.encode(), *(f.encode() for f in FLAGS)]))
        path = directory / f"{name}_{key.hexdigest()[:20]}.so"
        if not path.exists():
            cc = compiler()
            if cc is None:
                raise NativeUnavailable(f"no C compiler (CC={os.environ.get('CC')!r}; neither gcc nor cc on PATH)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
                os.close(fd)
            except OSError as err:
                raise NativeUnavailable(f"cannot write the compile cache {str(path.parent)!r}: {err}") from err
            try:
                done = subprocess.run([cc, *FLAGS, str(source), "-o", partial, "-lm"], capture_output=True,
                                      text=True, timeout=300)
                if done.returncode:
                    raise NativeUnavailable(f"{cc} failed on {name}.c: {done.stderr.strip()[-500:]}")
                os.replace(partial, path)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise NativeUnavailable(f"{cc} could not compile {name}.c: {err}") from err
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
    try:
        return ca.external(name, str(path))
    except RuntimeError as err:
        raise NativeUnavailable(f"cannot load {str(path)!r}: {err}") from err


class BufferedFunction:
    """A Function called on numpy arrays it owns: write ``inputs[i]``, ``call()``, read ``outputs[i]``.

    Each array has the Function's shape transposed (C order for casadi's column-major): an input
    ``(m, N)`` is ``inputs[i][N, m]``."""

    def __init__(self, function: ca.Function) -> None:
        self.function = function
        self.inputs = [np.zeros(function.size_in(i)[::-1]) for i in range(function.n_in())]
        self.outputs = [np.zeros(function.size_out(i)[::-1]) for i in range(function.n_out())]
        for i in range(function.n_in()):
            if function.sparsity_in(i).nnz() != self.inputs[i].size:
                raise ValueError(f"{function.name()}: input {i} is sparse; BufferedFunction takes dense ones")
        for i in range(function.n_out()):
            if function.sparsity_out(i).nnz() != self.outputs[i].size:
                raise ValueError(f"{function.name()}: output {i} is sparse; BufferedFunction takes dense ones")
        self._buffer, self._call = function.buffer()
        for i, array in enumerate(self.inputs):
            self._buffer.set_arg(i, memoryview(array.reshape(-1)))
        for i, array in enumerate(self.outputs):
            self._buffer.set_res(i, memoryview(array.reshape(-1)))

    def call(self) -> None:
        self._call()
