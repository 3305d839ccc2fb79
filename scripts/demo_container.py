"""The demo's body (scripts/demo runs it): what jaula can do today, end to end, for real.

A busybox template is built locally; an instance root is made from it in a `dir` pool (an
overlayfs clone, idmapped so that root inside is uid 100000 on the host without a chown); a
container runs on it through jaula-runtime with its own namespaces, a user namespace and hard
limits; we look inside, then at its counters from the host; then everything is removed.
Until the daemon exists this stands in for `jaula launch`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jaula.cgroups import reopen
from jaula.oci.spec import default_spec
from jaula.storage import TemplateStore, TerminalProgress
from jaula.storage.idmap import IdMap
from jaula.storage.pool import open_pool

HOST_ID = 100000
LOOK_INSIDE = r"""
read inside outside count < /proc/self/uid_map
echo "hostname:  $(hostname)"
echo "id:        $(id)"
echo "uid map:   uid $inside inside is uid $outside on the host ($count ids)"
echo "limits:    memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max) bytes, pids $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
echo "processes: (its own pid namespace)"
ps -o pid,user,comm
echo hello > /root/made-inside
"""


def main(work: Path, runtime: str) -> int:
    jaula = work / "jaula"
    print("demo: building the busybox template")
    with TerminalProgress() as progress:
        template = TemplateStore(jaula / "templates").build("busybox", "busybox", progress=progress)
    pool = open_pool("dir", str(jaula / "pools" / "default"))
    pool.create_volume("demo", str(template.rootfs))
    bundle = work / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    pool.mount("demo", str(bundle / "rootfs"), idmap=IdMap(HOST_ID, HOST_ID))
    cid = f"demo-{os.getpid()}"
    state_root = str(work / "state")
    try:
        spec = default_spec(args=["/bin/sleep", "300"])
        spec["process"]["terminal"] = False
        spec["root"]["readonly"] = False
        spec["hostname"] = "jaula-demo"
        lx = spec["linux"]
        lx["namespaces"].append({"type": "user"})
        lx["uidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]
        lx["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 64}, cpu={"quota": 50000, "period": 100000})
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        print(f"demo: running the container {cid} with {runtime} (64 MiB, 64 processes, half a cpu)\n")
        subprocess.run([runtime, "--root", state_root, "run", "--detach", "--bundle", str(bundle), cid], check=True)
        subprocess.run([runtime, "--root", state_root, "exec", cid, "/bin/sh", "-c", LOOK_INSIDE], check=True)
        made = bundle / "rootfs" / "root" / "made-inside"
        print(f"\nfrom the host: the file root made inside belongs to uid {made.stat().st_uid}; "
              f"the template's files still belong to uid {Path(template.rootfs, 'bin').stat().st_uid}")
        paths = json.loads(Path(state_root, cid, "state.json").read_text())["cgroupPaths"]
        print("\nits counters, seen from the host (held, maxheld, barrier, limit, failcnt):")
        print(reopen(paths).stats().beancounters())
        return 0
    finally:
        subprocess.run([runtime, "--root", state_root, "delete", "--force", cid], stderr=subprocess.DEVNULL, check=False)
        pool.unmount("demo")
        pool.delete_volume("demo")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "jaula-runtime"))
