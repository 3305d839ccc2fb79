"""httpx without its command-line tool: `from jaula.client.httpx_core import httpx`.

httpx's package imports its own CLI (`httpx._main`: click, rich's console, progress, syntax and
pygments' lexers) whenever those are installed, as they are here for `jaula`: about 50 ms of a
`jaula list` that needs none of it. Its import is refused once (a None entry in sys.modules makes
that import raise ImportError, which httpx catches and replaces by a stub `main`), then the entry
is removed, so a later `import httpx._main` works as usual.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]
else:
    import httpx

__all__ = ["httpx"]
