"""A recording that goes on until SIGTERM, as the data_logger's: a BagSequence flushed every 0.1 s.

    python live_writer.py FOLDER STORAGE

Writes std_msgs/Int32 on /count (data = 0, 1, ...) every 10 ms into
FOLDER/bag_NNNN (numbering after the bags already there), flushes every 0.1 s
and prints "flushed N" (messages written so far); on SIGTERM it closes the bag
(metadata.yaml written), prints "closed N" and exits 0. Used by
tests/io/test_bag_repair_live.py.
"""

from __future__ import annotations

import signal
import sys
import time

from mbrl_ros.io.bags import default_typestore
from mbrl_ros.io.recording import BagSequence


def main() -> None:
    folder, storage = sys.argv[1], sys.argv[2]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    store = default_typestore()
    Int32 = store.types["std_msgs/msg/Int32"]
    bags = BagSequence(folder, prefix="bag", storage=storage, split_duration_ns=3600 * 10**9, typestore=store)
    bags.add_topic("/count", "std_msgs/msg/Int32")
    written, next_flush = 0, time.monotonic() + 0.1
    while not stop:
        bags.write("/count", time.time_ns(), store.serialize_cdr(Int32(data=written), "std_msgs/msg/Int32"))
        written += 1
        if time.monotonic() >= next_flush:
            bags.flush()
            print("flushed", written, flush=True)
            next_flush += 0.1
        time.sleep(0.01)
    bags.close()
    print("closed", written, flush=True)


if __name__ == "__main__":
    main()
