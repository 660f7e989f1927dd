"""Run one benchmark job in a fresh Python process, as a user's `liteseg` command runs, so that its
time and peak memory are its own.

A plain `python -c` child, not multiprocessing's "spawn": a spawn child imports the parent's main
module while it starts, and with torch imported that way OpenVINO's inference in the child ran
about 1.5x slower here (localisation 1.06 s against 0.50 s in the same job run from a shell).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from liteseg.errors import LiteSegError

Result = TypeVar("Result")

_CHILD = "import sys; from liteseg.benchmarks.fresh_process import child_main; child_main(sys.argv[1], sys.argv[2])"


def run_in_fresh_process(function: Callable[..., Result], *args: object) -> Result:
    """`function(*args)` (a module-level function; picklable arguments and result) in a fresh
    Python process; its exception is raised here, a crash is a LiteSegError with its output."""
    with tempfile.TemporaryDirectory() as folder:
        call, answer = Path(folder) / "call.pickle", Path(folder) / "answer.pickle"
        call.write_bytes(pickle.dumps((function, args)))
        finished = subprocess.run([sys.executable, "-c", _CHILD, str(call), str(answer)], capture_output=True, text=True)
        if finished.returncode != 0 or not answer.is_file():
            output = (finished.stderr or finished.stdout).strip().splitlines()
            raise LiteSegError(f"the benchmark process of {function.__name__} failed (exit {finished.returncode}): "
                               f"{output[-1] if output else 'no output'}")
        ok, value = pickle.loads(answer.read_bytes())
    if not ok:
        raise value
    return value


def child_main(call: str, answer: str) -> None:
    """The child's side: run the pickled call in `call`, pickle (ok, result or exception) to `answer`."""
    function, args = pickle.loads(Path(call).read_bytes())
    try:
        outcome = (True, function(*args))
    except Exception as error:  # handed to the parent, which raises it
        outcome = (False, error)
    Path(answer).write_bytes(pickle.dumps(outcome))
