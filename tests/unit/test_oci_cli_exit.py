"""jaula-runtime ends with os._exit (no interpreter teardown): what it printed still arrives, and
output it could not write still fails the command, as Python's own exit would."""

from __future__ import annotations

import subprocess
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PROG = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
        "from jaula.oci.cli import main\n"
        "sys.argv = ['jaula-runtime', '--version']\n"
        "main()\n"
        "print('not reached')\n")


def test_output_is_flushed_before_the_process_ends() -> None:
    out = subprocess.run(["/usr/bin/python3.11", "-IS", "-c", PROG], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.startswith("jaula-runtime version ") and "not reached" not in out.stdout


def test_output_that_cannot_be_written_fails_the_command() -> None:
    with open("/dev/full", "w") as full:
        out = subprocess.run(["/usr/bin/python3.11", "-IS", "-c", PROG], stdout=full, stderr=subprocess.PIPE,
                             text=True, check=False)
    assert out.returncode == 120 and "writing the output: No space left on device" in out.stderr
