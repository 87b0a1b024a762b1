"""tests/conftest.py's parallel schedule holds: under ``-n 2`` the end-to-end modules share one worker
(never two stacks at once), and a module's tests share one worker (its fixtures are made once).

Runs pytest on a small tree laid out like ours, with our conftest.py, and reads which worker ran what.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

RECORD = """
import os
from pathlib import Path

def record(name):
    with open(Path(__file__).resolve().parents[2] / "ran.txt", "a") as out:
        out.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_end_to_end_modules_run_on_one_worker_and_each_module_on_one(tmp_path):
    tests = tmp_path / "tests"
    modules = {"e2e/test_a.py": 6, "e2e/test_b.py": 6, "e2e/test_soak.py": 2, "core/test_c.py": 6, "io/test_d.py": 6}
    for module, count in modules.items():
        path = tests / module
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORD + "".join(f"\ndef test_{k}():\n    record('{module}')\n" for k in range(count)))
    shutil.copy(Path(__file__).parent / "conftest.py", tests / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    workers: dict[str, set[str]] = {}
    for line in (tmp_path / "ran.txt").read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert sum(len(ran) for ran in workers.values()) == len(modules), workers  # each module on one worker
    assert workers["e2e/test_a.py"] == workers["e2e/test_b.py"], workers  # the stacks one at a time
    assert len({worker for ran in workers.values() for worker in ran}) == 2, workers  # and still in parallel
