"""libnftables through ctypes, spoken in its JSON interface: no `nft` process, no text parsing.

One call is one batch: libnftables sends every command of a buffer to the kernel as one
netlink transaction, so a list of commands either all apply or none does.

The process keeps one context (and so one netlink socket) for the network namespace it is in:
closing a netfilter socket makes the kernel wait for the release of whatever the last
transactions deleted (`nft_rcv_nl_event` flushes the destroy work, an RCU grace period: 5-20 ms
on a busy host), which a context per call paid on every batch that deleted anything. The
context checks the ruleset's generation on every call and refetches its cache when anything
changed, so it never answers from a stale one. A thread in another namespace gets a context of
its own for that call (a kept socket would keep that namespace, and its interfaces, alive); a
forked child starts its own. The socket is close-on-exec.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading

from jaula.errors import JaulaError, KernelMissing

LIBRARY = "libnftables.so.1"
_OUTPUT_JSON = 1 << 4           # enum nft_ctx_output_flags: NFT_CTX_OUTPUT_JSON

_lib: ctypes.CDLL | None = None
_lock = threading.Lock()
_kept: tuple[int, int, int] | None = None    # (pid, netns inode, context) of this process


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


def _sockets() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                out.add(fd)
        except OSError:
            pass
    return out


def _new_context(lib: ctypes.CDLL, keep: bool) -> int:
    before = _sockets() if keep else set()
    ctx = lib.nft_ctx_new(0)            # NFT_CTX_DEFAULT: opens its netlink socket here
    if not ctx:
        raise NftError("nft_ctx_new failed (out of memory?)")
    if keep:
        # libnftables opens its socket without SOCK_CLOEXEC; a kept one must not reach an exec'd
        # program (an instance's init). Sockets Python made are close-on-exec already.
        for fd in _sockets() - before:
            try:
                os.set_inheritable(int(fd), False)
            except OSError:
                pass
    lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
    if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
        lib.nft_ctx_free(ctx)
        raise NftError("nft_ctx_buffer_output/error failed")
    return ctx


def _netns(which: str) -> int:
    return os.stat(f"/proc/{which}/ns/net").st_ino


def _forget_after_fork() -> None:
    global _lock, _kept
    _lock = threading.Lock()
    _kept = None        # the parent's context stays the parent's: its socket is shared


os.register_at_fork(after_in_child=_forget_after_fork)


def _run(lib: ctypes.CDLL, ctx: int, text: bytes) -> tuple[int, str, str]:
    rc = lib.nft_run_cmd_from_buffer(ctx, text)
    out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
    err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    return rc, out, err


def run(commands: dict | list | str) -> dict:
    """Run a batch of JSON commands; return nft's JSON output ({"nftables": []} when it printed nothing).

    A str is one batch in nft's own syntax, for what libnftables 1.0.6's JSON cannot say (a set
    declared with `typeof`). Raises NftError with nft's error text when anything of the batch is
    refused (then nothing of it applied).
    """
    global _kept
    if isinstance(commands, str):
        text = commands.encode()
    else:
        doc = document(commands)
        if not doc["nftables"]:
            return {"nftables": []}
        text = json.dumps(doc).encode()
    lib = _library()
    netns = _netns("thread-self")
    if netns != _netns("self"):         # a thread visiting another namespace: a context for this call
        ctx = _new_context(lib, keep=False)
        try:
            rc, out, err = _run(lib, ctx, text)
        finally:
            lib.nft_ctx_free(ctx)
    else:
        with _lock:
            if _kept is None or _kept[:2] != (os.getpid(), netns):
                if _kept is not None and _kept[0] == os.getpid():
                    lib.nft_ctx_free(_kept[2])      # the process moved to another namespace
                _kept = None
                _kept = (os.getpid(), netns, _new_context(lib, keep=True))
            rc, out, err = _run(lib, _kept[2], text)
    if rc != 0:
        lines = (line.strip().removeprefix("internal:0:0-0: ") for line in err.splitlines())
        text_ = "; ".join(line for line in lines if line) or f"rc {rc}"
        raise NftError(f"nft refused the batch: {text_}")
    out = out.strip()
    return json.loads(out) if out else {"nftables": []}


def items(output: dict, kind: str) -> list[dict]:
    """The objects of one kind ("table", "set", "map", "chain", "rule") in a list output."""
    return [obj[kind] for obj in output.get("nftables", []) if kind in obj]
