"""libnftables through ctypes, spoken in its JSON interface: no `nft` process, no text parsing.

One call is one batch: libnftables sends every command of a buffer to the kernel as one
netlink transaction, so a list of commands either all apply or none does. A fresh context per
call talks to the network namespace of the calling thread at that moment, and never serves a
stale cache.
"""

from __future__ import annotations

import ctypes
import json

from jaula.errors import JaulaError, KernelMissing

LIBRARY = "libnftables.so.1"
_OUTPUT_JSON = 1 << 4           # enum nft_ctx_output_flags: NFT_CTX_OUTPUT_JSON

_lib: ctypes.CDLL | None = None


class NftError(JaulaError):
    """The kernel or libnftables refused a batch; the message is nft's own error text."""


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as e:
            raise KernelMissing(f"Cannot load {LIBRARY} ({e}): install Debian's nftables package") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        _lib = lib
    return _lib


def document(commands: dict | list) -> dict:
    """The JSON document for `commands`: a full {"nftables": [...]}, a list of commands, or one command."""
    if isinstance(commands, dict) and "nftables" in commands:
        return commands
    if isinstance(commands, dict):
        commands = [commands]
    return {"nftables": list(commands)}


def run(commands: dict | list) -> dict:
    """Run a batch of JSON commands; return nft's JSON output ({"nftables": []} when it printed nothing).

    Raises NftError with nft's error text when anything of the batch is refused (then nothing of it applied).
    """
    doc = document(commands)
    if not doc["nftables"]:
        return {"nftables": []}
    lib = _library()
    ctx = lib.nft_ctx_new(0)            # NFT_CTX_DEFAULT
    if not ctx:
        raise NftError("nft_ctx_new failed (out of memory?)")
    try:
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
            raise NftError("nft_ctx_buffer_output/error failed")
        rc = lib.nft_run_cmd_from_buffer(ctx, json.dumps(doc).encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        lines = (line.strip().removeprefix("internal:0:0-0: ") for line in err.splitlines())
        text = "; ".join(line for line in lines if line) or f"rc {rc}"
        raise NftError(f"nft refused the batch: {text}")
    out = out.strip()
    return json.loads(out) if out else {"nftables": []}


def items(output: dict, kind: str) -> list[dict]:
    """The objects of one kind ("table", "set", "map", "chain", "rule") in a list output."""
    return [obj[kind] for obj in output.get("nftables", []) if kind in obj]
