"""Running the API: in the foreground (``charlite serve``) or in a thread (tests, benchmarks).

The listening socket is bound here, before uvicorn starts, so a busy port is one clear error
and ``port=0`` picks a free one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator

from charlite.errors import CharliteError


def _require_serve_extra():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise CharliteError(
            f"charlite serve needs FastAPI and uvicorn ({exc.name} is missing)",
            hint="pip install 'charlite[serve]'",
        ) from None
    return uvicorn


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or a CharliteError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CharliteError(
            f"cannot listen on {host}: {exc.strerror}", hint="pass --host 127.0.0.1"
        ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "is in use" if exc.errno in (98, 48, 10048) else f"cannot be used: {exc.strerror}"
        raise CharliteError(
            f"port {port} on {host} {reason}", hint="choose another with --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(app, verbose: bool = False):
    uvicorn = _require_serve_extra()
    config = uvicorn.Config(
        app,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def run(app, sock: socket.socket, verbose: bool = False) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C."""
    server = make_server(app, verbose)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(
    app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields the base URL (``http://HOST:PORT/v1``)."""
    sock = bind(host, port)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(int(timeout * 20)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        if not server.started:
            raise CharliteError("the API server did not start")
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
