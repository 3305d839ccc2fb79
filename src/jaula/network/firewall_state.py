"""What jaula's two nftables tables hold now, read through libnftables' JSON, and elements back to JSON.

Elements are kept in one plain form so that what the kernel lists and what the firewall wants
compare equal: a key is a value or a tuple of values (a concatenation), an address range with a
prefix is "addr/len" (a full-length prefix is the bare address, as nft lists it), ports are ints.
"""

from __future__ import annotations

from jaula.network import nft
from jaula.network.firewall_rules import BRIDGE, INET
from jaula.record import Record


class State(Record):
    """Our tables as they are: which exist, their set/map elements (key -> map data or None), comments, chains."""
    inet: bool = False
    bridge: bool = False
    elements: dict = {}  # noqa: RUF012 - Record copies it; (family, set) -> {key: data}
    comments: dict = {}  # noqa: RUF012 - (family, set, key) -> comment
    chains: set = set()  # noqa: RUF012 - chain names of the bridge table

    @property
    def exists(self) -> bool:
        return self.inet or self.bridge


def value(v: object) -> object:
    """One element part from nft's JSON to the plain form."""
    if isinstance(v, dict):
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        if "range" in v:
            return f"{value(v['range'][0])}-{value(v['range'][1])}"
        if "concat" in v:
            return tuple(value(x) for x in v["concat"])
    return v


def parse_elements(elems: list) -> tuple[dict, dict]:
    """{key: data} and {key: comment} of a set's or map's "elem" list."""
    out, comments = {}, {}
    for e in elems:
        key, data = (e[0], e[1]) if isinstance(e, list) else (e, None)
        comment = None
        if isinstance(key, dict) and "elem" in key:
            comment = key["elem"].get("comment")
            key = key["elem"]["val"]
        k = value(key)
        out[k] = data
        if comment is not None:
            comments[k] = comment
    return out, comments


def value_json(v: object) -> object:
    if isinstance(v, tuple):
        return {"concat": [value_json(x) for x in v]}
    if isinstance(v, str) and "/" in v:     # interface names cannot hold '/': this is addr/len
        addr, length = v.split("/")
        return {"prefix": {"addr": addr, "len": int(length)}}
    return v


def elem_json(key: object, data: object = None, comment: str | None = None, is_map: bool = False) -> object:
    """An element for an add (with map data, and a comment naming its owner) or a delete (key only)."""
    val = value_json(key)
    if comment is not None:
        val = {"elem": {"val": val, "comment": comment}}
    return [val, data] if is_map and data is not None else val


def _list_table(family: str, table: str) -> dict | None:
    """One table's listing, or None when it does not exist.

    `list tables` would tell that too but costs 10-30 ms (libnftables fills its whole cache); a
    missing table is the only ENOENT a `list table` answers.
    """
    try:
        return nft.run({"list": {"table": {"family": family, "name": table}}})
    except nft.NftError as e:
        if "No such file or directory" in str(e):
            return None
        raise


def _fill(state: State, family: str, out: dict) -> None:
    for kind in ("set", "map"):
        for s in nft.items(out, kind):
            elems, comments = parse_elements(s.get("elem", []))
            state.elements[(family, s["name"])] = elems
            state.comments.update({(family, s["name"], k): c for k, c in comments.items()})


def read_sets(table: str, family: str, names: list[str], state: State | None = None) -> State:
    """Only the named sets of one family's table, into `state` (a fresh one by default): listing a
    set costs its elements only. The family reads as absent when a set (or the table) is missing."""
    state = State(elements={}, comments={}, chains=set()) if state is None else state
    for name in names:
        try:
            out = nft.run({"list": {"set": {"family": family, "table": table, "name": name}}})
        except nft.NftError as e:
            if "No such file or directory" in str(e):
                setattr(state, family, False)
                return state
            raise
        setattr(state, family, True)
        _fill(state, family, out)
    return state


def read_state(table: str, families: tuple[str, ...] = (INET, BRIDGE)) -> State:
    """The listed families' tables (a family not listed reads as absent)."""
    state = State(elements={}, comments={}, chains=set())
    for family in families:
        # one list per batch: libnftables 1.0.6 answers a second list in the same buffer from a stale cache
        out = _list_table(family, table)
        if out is None:
            continue
        setattr(state, family, True)
        _fill(state, family, out)
        if family == BRIDGE:
            state.chains.update(c["name"] for c in nft.items(out, "chain"))
    return state
