"""Run gpunet stopped in the middle of writing a file: `python tests/stop_in_write.py NAME ARGS...`.

Runs `gpunet ARGS...`, which stops itself (SIGSTOP, as job control does) as soon as an atomic write
to a file called NAME has created its temporary file, so that a test can send signals to a process
that is certainly in the middle of that save, and then let it go on (SIGCONT). The moment is found
with a Python audit hook (`tempfile.mkstemp` is an audited event): nothing in gpunet is changed.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path


def main() -> None:
    name, args = sys.argv[1], sys.argv[2:]

    temporary: str | None = None  # the temporary file just created for NAME, if one was

    def stop_in_the_write(event: str, details: tuple) -> None:
        nonlocal temporary
        if event == "tempfile.mkstemp":
            # `.<name>.<pid>-<host>.<random>.tmp` beside the target: the writer's, or the one made
            # before any work to check that the directory can be written in (removed at once)
            temporary = details[0] if Path(details[0]).name.startswith(f".{name}.") else None
        elif event == "open" and temporary is not None:
            if isinstance(details[0], int):  # its descriptor opened as a file, to be written: the writer's
                temporary = None
                os.kill(os.getpid(), signal.SIGSTOP)
            elif details[0] != temporary:
                temporary = None
        elif event == "os.remove":
            temporary = None

    sys.addaudithook(stop_in_the_write)
    sys.argv = ["gpunet", *args]
    runpy.run_module("gpunet", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
