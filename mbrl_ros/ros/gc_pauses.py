"""The cyclic garbage collector in a real-time node: out of the loop's way, and watched.

CPython's cyclic collector stops the process while it walks every tracked object of the
generations it collects. A node that imports torch and rclpy tracks about 180,000 objects
(the controller's modules: a full pass takes 80-95 ms on these machines), and a first plan
that compiles leaves hundreds of thousands more, so the full passes CPython starts on its own
(generation 2, whenever the survivors since the last one reach a quarter of it) are pauses
longer than the race's 50 ms period, at moments nobody chose.

``settle_heap`` collects once and freezes what is alive (``gc.freeze``: later passes never walk
it again), so the passes that remain walk only what was allocated since. With a node's
``settle_heap`` parameter true (off by default: through the stack it made the race's end-to-end
p99 worse, README "The garbage collector"), ``run_node`` settles the node once it is built and
the controller again after the first plan with each new model, once its command is out.
``GcPauses`` times every pass (``gc.callbacks``) for every node's diagnostics.
"""

from __future__ import annotations

import gc
import time


def settle_heap() -> float:
    """Collect every generation, frozen objects included (an old model frozen at the last settling and dropped
    since is freed, not kept for ever), then freeze what survives; returns the wall time taken (ms). The
    process's ``PAUSES`` count from here: what the diagnostics show is the loop's own collector passes."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    PAUSES.reset()
    return (time.perf_counter() - started) * 1e3


class GcPauses:
    """How often the cyclic collector ran in this process since ``start`` (or the last ``reset``) and its longest
    pass per generation (ms), from ``gc.callbacks``. ``stop`` removes the callback."""

    def __init__(self) -> None:
        self._began = 0.0
        self.reset()

    def reset(self) -> None:
        self.passes = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]

    def start(self) -> "GcPauses":
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = int(info.get("generation", 0))
        self.passes[generation] += 1
        self.longest_ms[generation] = max(self.longest_ms[generation], (time.perf_counter() - self._began) * 1e3)

    def as_key_values(self) -> dict[str, str]:
        values = {}
        for generation in range(3):
            values[f"gc_gen{generation}_passes"] = str(self.passes[generation])
            values[f"gc_gen{generation}_longest_ms"] = f"{self.longest_ms[generation]:.3f}"
        values["gc_frozen_objects"] = str(gc.get_freeze_count())
        return values

    @property
    def started(self) -> bool:
        return self._callback in gc.callbacks


PAUSES = GcPauses()  # the process's: run_node starts it, every node's /diagnostics report it
