"""jaula.oci.fastload: jaula-runtime's modules from one bundle of compiled code, the normal import
for anything edited since the bundle was built, and nothing at all without a usable bundle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jaula.oci import fastload

SRC = Path(__file__).resolve().parents[2] / "src"
PYTHON = "/usr/bin/python3.11"


def _run(src: Path, bundle: Path, code: str) -> str:
    """Run `code` in a fresh `python3.11 -IS` with `src` first on the path and the bundle installed."""
    prog = (f"import sys; sys.path.insert(0, {str(src)!r})\n"
            "from jaula.oci import fastload\n"
            f"finder = fastload.install({str(bundle)!r})\n" + code)
    return subprocess.run([PYTHON, "-IS", "-c", prog], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of src/jaula to build bundles of and edit."""
    src = tmp_path / "src"
    shutil.copytree(SRC / "jaula", src / "jaula", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return src


def test_modules_lists_the_runtimes_packages_and_helpers() -> None:
    names = {name for name, _, _ in fastload.modules()}
    assert {"jaula", "jaula.oci", "jaula.oci.create", "jaula.linux.mount", "jaula.cgroups.v1", "jaula.record",
            "jaula.errors", "jaula.fastjson"} <= names
    assert not any(n.startswith(("jaula.daemon", "jaula.cli", "jaula.instances")) for n in names)


def test_modules_come_from_the_bundle(tree: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.bundle"
    assert fastload.build(str(bundle), str(tree / "jaula")) == len(fastload.modules(str(tree / "jaula")))
    out = _run(tree, bundle, "import jaula.oci.create as m, jaula.linux as pkg\n"
                             "print(type(m.__spec__.loader).__name__, m.__file__, pkg.__path__[0], callable(m.create))")
    assert out.split() == ["Finder", str(tree / "jaula/oci/create.py"), str(tree / "jaula/linux"), "True"]


def test_an_edited_module_is_imported_from_its_source(tree: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.bundle"
    fastload.build(str(bundle), str(tree / "jaula"))
    with open(tree / "jaula/oci/signals.py", "a") as f:
        f.write("\nEDITED = 'yes'\n")
    out = _run(tree, bundle, "import jaula.oci.signals as s, jaula.oci.state as st\n"
                             "print(s.EDITED, type(s.__spec__.loader).__name__, type(st.__spec__.loader).__name__)")
    assert out.split() == ["yes", "SourceFileLoader", "Finder"]


@pytest.mark.parametrize("content", [b"", b"not a bundle", b"\x00" * 64])
def test_an_unusable_bundle_changes_nothing(tree: Path, tmp_path: Path, content: bytes) -> None:
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(content)
    out = _run(tree, bundle, "import jaula.oci.state as st\nprint(finder, type(st.__spec__.loader).__name__)")
    assert out.split() == ["None", "SourceFileLoader"]


def test_a_missing_bundle_changes_nothing(tree: Path, tmp_path: Path) -> None:
    assert _run(tree, tmp_path / "none.bundle", "print(finder, len(sys.meta_path))").split()[0] == "None"


def test_a_bundle_of_another_python_is_refused(tree: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.bundle"
    fastload.build(str(bundle), str(tree / "jaula"))
    data = bundle.read_bytes()
    bundle.write_bytes(b"\x00\x00" + data[2:])  # another magic number
    assert _run(tree, bundle, "print(finder)") == "None"


@pytest.mark.skipif(not Path(fastload.PATH).is_file(), reason=f"{fastload.PATH} not built (scripts/build-runtime-fast)")
def test_the_runtime_program_installs_the_bundle(tmp_path: Path) -> None:
    prog = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from jaula.oci import cli\n"
            "def report(code):\n"
            "    m = sys.modules['jaula.oci.commands']\n"
            "    print(code, type(m.__spec__.loader).__name__, flush=True)\n"
            "    raise SystemExit(0)\n"
            "cli._exit_now = report\n"
            f"sys.argv = ['jaula-runtime', '--root', {str(tmp_path)!r}, 'list', '-q']\n"
            "cli.main()\n")
    out = subprocess.run([PYTHON, "-IS", "-c", prog], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "Finder"]


def test_preload_runs_a_verbs_modules_as_their_import_would(tree: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.bundle"
    fastload.build(str(bundle), str(tree / "jaula"))
    with open(tree / "jaula/oci/validate.py", "a") as f:
        f.write("\nEDITED = 'yes'\n")  # stale in the bundle: left to its normal import
    out = _run(tree, bundle, "fastload.preload('run')\n"
                             "import jaula.cgroups.v1 as v1, jaula.linux as pkg, jaula.oci.validate as val\n"
                             "bad = [n for n in fastload.VERBS['run'] if n != 'jaula.oci.validate' and (\n"
                             "       type(sys.modules[n].__loader__).__name__ != 'Finder' or sys.modules[n].__spec__.name != n)]\n"
                             "print(bad, v1.__package__, pkg.__package__, pkg.__path__[0], sys.modules['jaula'].oci.create is sys.modules['jaula.oci.create'],\n"
                             "      val.EDITED, type(val.__loader__).__name__, 'jaula.oci.execute' in sys.modules)")
    assert out.split() == ["[]", "jaula.cgroups", "jaula.linux", str(tree / "jaula/linux"), "True", "yes",
                           "SourceFileLoader", "False"]


def test_preload_without_a_bundle_does_nothing(tree: Path, tmp_path: Path) -> None:
    out = _run(tree, tmp_path / "none.bundle", "fastload.preload('run')\nprint('jaula.oci.create' in sys.modules)")
    assert out == "False"
