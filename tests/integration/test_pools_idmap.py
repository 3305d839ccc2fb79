"""Idmapped roots for real: a template owned by host root seen as root's inside a user namespace
mapping 0 to N, without a chown of the template; files made inside land owned by N on the host."""

# ruff: noqa: F811 - `area` is a fixture imported from pool_checks
from __future__ import annotations

import os
import tarfile

import pytest
from pool_checks import area, in_userns, make_template, tree  # noqa: F401

from jaula.storage import overlay
from jaula.storage.idmap import IdMap
from jaula.storage.pool import open_pool

pytestmark = pytest.mark.root
N = 200000
MiB = 1 << 20


def inside() -> dict:
    """What root of the instance sees and does (runs in the child, cwd = the mounted root)."""
    seen = {p: [os.lstat(p).st_uid, os.lstat(p).st_gid] for p in (".", "etc/hostname", "bin/tool", "var/lib/app")}
    with open("made-inside", "w") as f:
        f.write("hello\n")
    os.mkdir("var/lib/app/cache")
    with open("var/lib/app/cache/entry", "w") as f:
        f.write("x")
    os.chown("var/lib/app/cache/entry", 33, 33)  # www-data inside
    with open("etc/hostname", "a") as f:       # a template file, copied up
        f.write("instance\n")
    return {"seen": seen, "made": [os.stat("made-inside").st_uid, os.stat("made-inside").st_gid],
            "entry": os.stat("var/lib/app/cache/entry").st_uid}


@pytest.fixture(params=["dir", "loop", "dir-staging"])
def setup(request, area, monkeypatch):
    kind = request.param.split("-")[0]
    if request.param.endswith("staging"):  # the path older kernels take (no overlayfs layers by fd)
        monkeypatch.setattr(overlay, "_fd_layers", False)
    template = make_template(str(area / "template"))
    target = area / "root"
    target.mkdir()
    pool = open_pool(kind, str(area / "pool"))
    pool.create_volume("u", template, size=64 * MiB if kind == "loop" else None)
    return pool, template, str(target)


def upper_of(pool) -> str:
    """Folder of the volume's upper layer, reachable on the host (loop: its mounted image)."""
    return os.path.join(pool.vdir("u"), "mnt" if pool.kind == "loop" else "", "upper")


def test_template_owned_by_root_is_root_inside_and_new_files_are_shifted(setup):
    pool, template, target = setup
    before = tree(template)
    pool.mount("u", target, idmap=IdMap(N, N + 5, 65536))
    try:
        # the host sees the template through the idmap: owned by N, while on disk it is 0
        assert (os.stat(f"{target}/etc/hostname").st_uid, os.stat(f"{target}/etc/hostname").st_gid) == (N, N + 5)
        assert os.stat(f"{template}/etc/hostname").st_uid == 0
        got = in_userns(N, N + 5, target, inside)
        assert got["seen"] == {p: [0, 0] for p in (".", "etc/hostname", "bin/tool", "var/lib/app")}
        assert got["made"] == [0, 0] and got["entry"] == 33
        upper = upper_of(pool)
        st = os.lstat(f"{upper}/made-inside")
        assert (st.st_uid, st.st_gid) == (N, N + 5)
        assert os.lstat(f"{upper}/var/lib/app/cache/entry").st_uid == N + 33
        assert os.lstat(f"{upper}/etc/hostname").st_uid == N  # copied up with the shifted owner
        assert os.lstat(f"{upper}/var/lib/app").st_uid == N
        assert os.stat(f"{target}/bin/tool").st_mode & 0o7777 == 0o4755
    finally:
        pool.unmount("u")
    assert tree(template) == before, "the template was changed (chowned?)"
    assert pool.volume("u").idmap == IdMap(N, N + 5, 65536)


def test_another_id_range_shifts_the_layer_and_export_unshifts(setup, area):
    pool, _template, target = setup
    pool.mount("u", target, idmap=IdMap(N, N, 65536))
    try:
        in_userns(N, N, target, inside)
    finally:
        pool.unmount("u")
    m2 = IdMap(300000, 300000, 65536)
    pool.mount("u", target, idmap=m2)  # the layer follows the new range
    try:
        upper = upper_of(pool)
        assert os.lstat(f"{upper}/made-inside").st_uid == 300000
        assert os.lstat(f"{upper}/var/lib/app/cache/entry").st_uid == 300033
        got = in_userns(300000, 300000, target, lambda: [os.stat("made-inside").st_uid,
                                                          os.stat("var/lib/app/cache/entry").st_uid,
                                                          os.stat("etc/passwd").st_uid])
        assert got == [0, 33, 0]
    finally:
        pool.unmount("u")
    tar = str(area / "u.tar")
    pool.export("u", tar)  # owners as seen inside
    with tarfile.open(tar) as t:
        owners = {ti.name: ti.uid for ti in t.getmembers()}
    assert owners["upper/made-inside"] == 0 and owners["upper/var/lib/app/cache/entry"] == 33
    pool.import_("copy", tar)
    assert pool.volume("copy").idmap is None
    pool.mount("copy", target, idmap=IdMap(400000, 400000, 65536))
    try:
        assert os.stat(f"{target}/made-inside").st_uid == 400000
        assert os.stat(f"{target}/etc/passwd").st_uid == 400000
    finally:
        pool.unmount("copy")
