"""What jaula-runtime loads through Python's import system on its busy verbs: with the module
bundle built (scripts/build-runtime-fast; the test builds it afresh, as sources change), none of
jaula's own modules past the launcher's first few (fastload.VERBS lists the rest, and drifts from
the code if this fails), and never ctypes when the C module is built."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jaula.oci import fastload
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]
# Imported before main() installs the bundle (the launcher and cli.py), and the C module.
BEFORE = {"jaula", "jaula.oci", "jaula.errors", "jaula.oci.argv", "jaula.oci.cli", "jaula.oci.fastload",
          "jaula.linux._sys"}


def _imported(runtime: Runtime, *args: str | Path) -> set[str]:
    """The modules `jaula-runtime ARGS` imports through the import system (python -X importtime)."""
    python = Path(runtime.path).read_text().split()[0].removeprefix("#!")  # the launcher's interpreter
    argv = [python, "-IS", "-X", "importtime", *runtime.argv(*args)]
    with tempfile.TemporaryFile() as err:  # not a pipe: a created container keeps the runtime's stdio
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                              env=runtime.env, timeout=60, check=False)
        err.seek(0)
        text = err.read().decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in text.splitlines() if line.startswith("import time:")}


def test_the_busy_verbs_import_none_of_jaulas_modules_through_the_import_system(runtime: Runtime,
                                                                                 bundle: Bundle) -> None:
    fastload.build()  # what scripts/build-runtime-fast does: an edited module must not count as drift
    b = bundle(["/bin/true"])
    cid, cid2 = runtime.new_id(), runtime.new_id()
    seen = _imported(runtime, "run", "--bundle", b, cid)
    seen |= _imported(runtime, "create", "--bundle", b, cid2)
    for verb in ("state", "start"):
        seen |= _imported(runtime, verb, cid2)
    runtime("delete", "--force", cid2, check=True)
    ours = {m for m in seen if m == "jaula" or m.startswith("jaula.")}
    assert ours <= BEFORE, f"imported the slow way: {sorted(ours - BEFORE)}"
    if any(p.name.startswith("_sys.") for p in Path(fastload._JAULA, "linux").iterdir()):  # the C module is built
        assert "ctypes" not in seen


def test_a_container_with_seccomp_does_not_import_ctypes(runtime: Runtime, bundle: Bundle) -> None:
    if not any(p.name.startswith("_sys.") for p in Path(fastload._JAULA, "linux").iterdir()):
        pytest.skip("jaula.linux._sys is not built (scripts/build-runtime-fast): the runtime uses ctypes")
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    seen = _imported(runtime, "run", "--bundle", bundle(["/bin/true"], linux={"seccomp": seccomp}), runtime.new_id())
    assert "jaula.oci.seccomp" in seen and "ctypes" not in seen
