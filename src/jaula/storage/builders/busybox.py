"""The `busybox` template: Debian's static busybox, its applet links and the few files a system
instance needs (passwd, group, hostname, hosts, an inittab and rcS for busybox init). Seconds,
no network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from jaula.errors import ConfigError
from jaula.storage.builders import BuildContext, ImageDefaults, Option, is_path, is_str

DEFAULT_BUSYBOX = "/bin/busybox"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OPTIONS = {
    "busybox": Option("the static busybox binary to install (Debian's busybox-static: /bin/busybox)", is_path),
    "hostname": Option("the instance's host name in /etc/hostname (default: the template's name)", is_str),
}

DIRS = {  # path: mode
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
    "etc/init.d": 0o755, "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700,
    "run": 0o755, "var": 0o755, "var/tmp": 0o1777, "var/log": 0o755, "var/run": None, "home": 0o755,
    "mnt": 0o755,
}

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""
SHADOW = """\
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
"""
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

# busybox init(8) reads this; without it, it would start shells on tty1-4, which an instance has not.
INITTAB = """\
# busybox init: /etc/init.d/rcS once, then a shell on the console when there is one.
# An instance stops when its init gets SIGTERM (reboot: the runtime ends the pid namespace).
::sysinit:/etc/init.d/rcS
::respawn:/etc/init.d/console
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
"""

RCS = """\
#!/bin/sh
# Run once at boot by busybox init (::sysinit in /etc/inittab): mount what the runtime did not,
# name the host, bring up loopback, then run /etc/init.d/S??* start in order.
mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }
[ -e /proc/self ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs -o ro sysfs /sys 2>/dev/null
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run 2>/dev/null
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp 2>/dev/null
[ -s /etc/hostname ] && hostname -F /etc/hostname 2>/dev/null
ip link set lo up 2>/dev/null
for script in /etc/init.d/S??*; do
    [ -x "$script" ] && "$script" start
done
exit 0
"""

RCK = """\
#!/bin/sh
# Run by busybox init before it stops: /etc/init.d/S??* stop in reverse order, then sync.
for script in $(ls -r /etc/init.d/S??* 2>/dev/null); do
    [ -x "$script" ] && "$script" stop
done
sync
exit 0
"""

# respawned by init: a login shell when the instance has a terminal as its console, else nothing
# to do (sleep instead of exiting at once, so init does not respawn it in a loop).
CONSOLE = """\
#!/bin/sh
if [ -t 0 ]; then
    exec /bin/sh -l
fi
exec sleep 2147483647
"""

PROFILE = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\u@\\h:\\w\\$ '
"""


def build(ctx: BuildContext, busybox: str | Path = DEFAULT_BUSYBOX, hostname: str | None = None) -> ImageDefaults:
    binary = Path(busybox)
    problem = _static_binary_problem(binary)
    if problem:
        raise ConfigError(f"busybox: {str(binary)!r} {problem}")
    applets = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    banner = subprocess.run([str(binary)], capture_output=True, text=True, check=False).stdout
    version = m.group(1) if (m := re.search(r"BusyBox v(\S+)", banner)) else "unknown"

    root = ctx.rootfs
    total = len(DIRS) + len(applets) + 12
    done = 0
    ctx.progress("busybox", done, total)
    for rel, mode in DIRS.items():
        if mode is None:
            continue
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
        done += 1
    (root / "var/run").symlink_to("/run")
    shutil.copyfile(binary, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    ctx.progress("busybox", done, total)
    for applet in applets:
        rel = applet.lstrip("/")
        if rel == "bin/busybox" or ".." in rel.split("/"):
            continue
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
        done += 1
        if done % 64 == 0:
            ctx.progress("busybox", done, total)
    files = {
        "etc/passwd": (PASSWD, 0o644),
        "etc/group": (GROUP, 0o644),
        "etc/shadow": (SHADOW, 0o640),
        "etc/hostname": ((hostname or ctx.name) + "\n", 0o644),
        "etc/hosts": (HOSTS, 0o644),
        "etc/resolv.conf": ("", 0o644),
        "etc/profile": (PROFILE, 0o644),
        "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
        "etc/inittab": (INITTAB, 0o644),
        "etc/init.d/rcS": (RCS, 0o755),
        "etc/init.d/rcK": (RCK, 0o755),
        "etc/init.d/console": (CONSOLE, 0o755),
    }
    for rel, (text, mode) in files.items():
        path = root / rel
        path.write_text(text)
        os.chmod(path, mode)
        done += 1
    ctx.progress("busybox", total, total)
    return ImageDefaults(
        source=f"busybox {version} ({binary})",
        cmd=["/sbin/init"],
        env=[PATH],
        workdir="/",
        os="busybox",
    )


def _static_binary_problem(path: Path) -> str | None:
    """Why `path` cannot be a template's only program, or None: it must be a static ELF
    (no PT_INTERP program header), else the tree lacks its dynamic loader and libc."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return "is not an ELF executable"
            if head[4] != 2:
                return None  # 32-bit: trust the caller
            order = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except FileNotFoundError:
        return "does not exist: apt-get install busybox-static"
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    for i in range(phnum):
        if int.from_bytes(table[i * phentsize:i * phentsize + 4], order) == 3:  # PT_INTERP
            return "is dynamically linked: install busybox-static (its /bin/busybox is static)"
    return None
