"""jaula.fastjson: the C scanner's answers match json's, for text and bytes (with or without a BOM)."""

from __future__ import annotations

import json

import pytest

from jaula import fastjson

DOCS = ['{"a": [1, 2.5, "x\\u00e9"], "b": null, "c": true}', "  [ ]  ", '"\\ud83d\\ude00"', "0"]


@pytest.mark.parametrize("doc", DOCS)
def test_loads_matches_json(doc: str) -> None:
    assert fastjson.loads(doc) == json.loads(doc)
    assert fastjson.loads(doc.encode()) == json.loads(doc)
    assert fastjson.loads(b"\xef\xbb\xbf" + doc.encode()) == json.loads(doc)  # a BOM is dropped


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "1 2", b"\xff"])
def test_bad_input_raises_like_json(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(bad)


def test_dumps_round_trips() -> None:
    obj = {"id": "x", "n": [1, 2], "u": "é", "none": None}
    assert json.loads(fastjson.dumps(obj)) == obj and fastjson.dumps(obj, compact=False) == json.dumps(obj, ensure_ascii=False)
