"""`python -m mbrl_ros.launcher FILE [name:=value ...]`, same as `mbrl-ros launch`."""

import sys

from .cli import main

sys.exit(main())
