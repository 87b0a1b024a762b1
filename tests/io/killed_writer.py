"""A BagRecorder in a process that kills itself with SIGKILL in the middle of a recording.

    python killed_writer.py BAG STORAGE FLUSHED UNFLUSHED [PAYLOAD_BYTES]

Writes FLUSHED messages on /count (std_msgs/Int32, data = 0, 1, ...) and on
/blob (std_msgs/String of PAYLOAD_BYTES characters) alternately, flushes,
writes UNFLUSHED more, prints "written F U" and dies by SIGKILL without closing
the bag. Used by tests/io/test_recording.py and test_bag_repair.py.
"""

from __future__ import annotations

import os
import signal
import sys

from mbrl_ros.io.bags import default_typestore
from mbrl_ros.io.recording import BagRecorder, bag_qos


def main() -> None:
    path, storage, flushed, unflushed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    payload = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    store = default_typestore()
    Int32, String = store.types["std_msgs/msg/Int32"], store.types["std_msgs/msg/String"]
    bag = BagRecorder(path, storage=storage, typestore=store)
    bag.add_topic("/count", "std_msgs/msg/Int32", bag_qos(reliable=True, transient_local=False, depth=10))
    bag.add_topic("/blob", "std_msgs/msg/String", bag_qos(reliable=False, transient_local=False))
    for i in range(flushed + unflushed):
        if i % 2 == 0:
            data = store.serialize_cdr(Int32(data=i // 2), "std_msgs/msg/Int32")
            bag.write("/count", 10**9 + i * 10**6, data)
        else:
            data = store.serialize_cdr(String(data="x" * payload), "std_msgs/msg/String")
            bag.write("/blob", 10**9 + i * 10**6, data)
        if i + 1 == flushed:
            bag.flush()
    print("written", flushed, unflushed, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
