"""Mount option strings of config.json turned into mount(2) flags, propagation and mount_setattr attributes."""

from __future__ import annotations

from jaula.linux import mount as m
from jaula.record import Record

# option -> (clear?, flag)
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, m.MS_RDONLY), "rw": (True, m.MS_RDONLY),
    "nosuid": (False, m.MS_NOSUID), "suid": (True, m.MS_NOSUID),
    "nodev": (False, m.MS_NODEV), "dev": (True, m.MS_NODEV),
    "noexec": (False, m.MS_NOEXEC), "exec": (True, m.MS_NOEXEC),
    "sync": (False, m.MS_SYNCHRONOUS), "async": (True, m.MS_SYNCHRONOUS),
    "dirsync": (False, m.MS_DIRSYNC),
    "remount": (False, m.MS_REMOUNT),
    "mand": (False, m.MS_MANDLOCK), "nomand": (True, m.MS_MANDLOCK),
    "noatime": (False, m.MS_NOATIME), "atime": (True, m.MS_NOATIME),
    "nodiratime": (False, m.MS_NODIRATIME), "diratime": (True, m.MS_NODIRATIME),
    "relatime": (False, m.MS_RELATIME), "norelatime": (True, m.MS_RELATIME),
    "strictatime": (False, m.MS_STRICTATIME), "nostrictatime": (True, m.MS_STRICTATIME),
    "lazytime": (False, m.MS_LAZYTIME), "nolazytime": (True, m.MS_LAZYTIME),
    "nosymfollow": (False, m.MS_NOSYMFOLLOW), "symfollow": (True, m.MS_NOSYMFOLLOW),
    "silent": (False, m.MS_SILENT), "loud": (True, m.MS_SILENT),
}
_PROPAGATION: dict[str, int] = {
    "private": m.MS_PRIVATE, "rprivate": m.MS_PRIVATE | m.MS_REC,
    "shared": m.MS_SHARED, "rshared": m.MS_SHARED | m.MS_REC,
    "slave": m.MS_SLAVE, "rslave": m.MS_SLAVE | m.MS_REC,
    "unbindable": m.MS_UNBINDABLE, "runbindable": m.MS_UNBINDABLE | m.MS_REC,
}
# recursive variants, applied with mount_setattr(AT_RECURSIVE): option -> (clear?, attr)
_RECURSIVE: dict[str, tuple[bool, int]] = {
    "rro": (False, m.MOUNT_ATTR_RDONLY), "rrw": (True, m.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, m.MOUNT_ATTR_NOSUID), "rsuid": (True, m.MOUNT_ATTR_NOSUID),
    "rnodev": (False, m.MOUNT_ATTR_NODEV), "rdev": (True, m.MOUNT_ATTR_NODEV),
    "rnoexec": (False, m.MOUNT_ATTR_NOEXEC), "rexec": (True, m.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, m.MOUNT_ATTR_NODIRATIME), "rdiratime": (True, m.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, m.MOUNT_ATTR_NOSYMFOLLOW), "rsymfollow": (True, m.MOUNT_ATTR_NOSYMFOLLOW),
    "rrelatime": (False, m.MOUNT_ATTR_RELATIME), "rnorelatime": (True, m.MOUNT_ATTR_RELATIME),
    "rnoatime": (False, m.MOUNT_ATTR_NOATIME), "ratime": (True, m.MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, m.MOUNT_ATTR_STRICTATIME), "rnostrictatime": (True, m.MOUNT_ATTR_STRICTATIME),
}
_ATIME_ATTRS = m.MOUNT_ATTR_NOATIME | m.MOUNT_ATTR_STRICTATIME | m.MOUNT_ATTR_RELATIME


class MountOptions(Record):
    flags: int = 0
    clear: int = 0
    propagation: list = []     # flags for one mount(2) call each, in order
    rec_set: int = 0
    rec_clr: int = 0
    bind: bool = False
    recursive_bind: bool = False
    idmap: bool = False
    recursive_idmap: bool = False
    copy_up: bool = False      # tmpcopyup: copy what the image has at the destination into the tmpfs
    data: list = []            # filesystem-specific options, joined with "," for mount(2)


def parse(options: list[str]) -> MountOptions:
    o = MountOptions()
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            if clear:
                o.flags &= ~flag
                o.clear |= flag
            else:
                o.flags |= flag
                o.clear &= ~flag
        elif opt in _PROPAGATION:
            o.propagation.append(_PROPAGATION[opt])
        elif opt in _RECURSIVE:
            clear, attr = _RECURSIVE[opt]
            if attr in (m.MOUNT_ATTR_NOATIME, m.MOUNT_ATTR_STRICTATIME, m.MOUNT_ATTR_RELATIME) and not clear:
                o.rec_clr |= m.MOUNT_ATTR__ATIME  # atime modes are one field: clear it, then set
            if clear:
                o.rec_clr |= attr
                o.rec_set &= ~attr
            else:
                o.rec_set |= attr
        elif opt == "bind":
            o.bind = True
        elif opt == "rbind":
            o.bind = o.recursive_bind = True
        elif opt == "idmap":
            o.idmap = True
        elif opt == "ridmap":
            o.idmap = o.recursive_idmap = True
        elif opt == "tmpcopyup":
            o.copy_up = True
        elif opt in ("defaults", ""):
            pass
        else:
            o.data.append(opt)
    return o
