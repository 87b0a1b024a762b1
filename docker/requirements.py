"""Print the pins of pyproject.toml that the image installs with pip: the core dependencies and the
named extras, less the ros-* wheels (in the image ROS comes from apt; rosbags and mcap stay).

    python3 docker/requirements.py pyproject.toml ros sim > requirements.txt
"""

import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[2:]:
    wanted += project["optional-dependencies"][extra]
for requirement in dict.fromkeys(wanted):
    if not requirement.startswith("ros-"):
        print(requirement)
