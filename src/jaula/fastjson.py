"""JSON through the C accelerator alone.

`import json` costs about 7 ms here, nearly all of it `re` (json.decoder compiles regular
expressions at import). The C scanner and encoder in `_json` need none of that; the pure-Python
package is imported only to raise a proper error for bad input.
"""

from __future__ import annotations

import _json


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_Context())
_WS = " \t\n\r"


def loads(text: str | bytes) -> object:
    if isinstance(text, bytes):
        # "utf-8-sig" would import its codec module, a few hundred us: drop a BOM by hand
        text = (text[3:] if text.startswith(b"\xef\xbb\xbf") else text).decode("utf-8")
    i = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, i)
    except StopIteration as e:
        import json

        raise json.JSONDecodeError("Expecting value", text, e.value) from None
    except SystemError:
        # _json raises its syntax errors through json.decoder, found only once that is imported;
        # otherwise it fails with SystemError: parse again with the full package for the real error.
        import json

        json.loads(text)
        raise
    rest = text[end:].strip(_WS)
    if rest:
        import json

        raise json.JSONDecodeError("Extra data", text, len(text) - len(text[end:].lstrip(_WS)))
    return obj


def _default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring, None, ": ", ", ", False, False, True)
_encode_compact = _json.make_encoder(None, _default, _json.encode_basestring, None, ":", ",", False, False, True)


def dumps(obj: object, compact: bool = True) -> str:
    return "".join((_encode_compact if compact else _encode)(obj, 0))


def load_file(path: str) -> object:
    with open(path, "rb") as f:
        return loads(f.read())
