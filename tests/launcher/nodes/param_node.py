"""A real rclpy node for launcher tests: prints, as one JSON line, its name,
namespace, parameters and the resolved name of its `chatter` topic, then exits."""

import json
import sys

import rclpy
from rclpy.node import Node
from std_msgs.msg import String


def main() -> int:
    rclpy.init(args=sys.argv)
    node = Node("param_node", automatically_declare_parameters_from_overrides=True)
    publisher = node.create_publisher(String, "chatter", 10)
    params = {}
    for name, parameter in node.get_parameters_by_prefix("").items():
        value = parameter.value
        if not isinstance(value, (str, bytes, bool, int, float)) and value is not None:
            value = list(value)
        params[name] = value
    for built_in in ("use_sim_time", "start_type_description_service"):
        params.pop(built_in, None)
    print(json.dumps({"name": node.get_name(), "namespace": node.get_namespace(),
                      "params": params, "topic": publisher.topic_name}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
