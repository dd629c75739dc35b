"""The live view's web server: a Bokeh server on loopback, run on its own thread."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from pathlib import Path

import numpy as np
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from numpy.typing import NDArray
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from engine.errors import ConfigError
from engine.view._link import CampaignLink
from engine.view._page import LivePage

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""The only addresses the view binds: it carries the operator's buttons, so it is never on the network."""


class ViewServer:
    """Serves the live view of one run at ``url`` until ``close``.

    Bokeh serves the page, its own JavaScript (from the installed package: nothing comes from a CDN)
    and a WebSocket per tab; each tab refreshes every ``refresh_s`` from the run's files and the
    campaign's control socket.

    Args:
        path: the run directory.
        link: the campaign running it (``NoCampaign`` for a finished run).
        port: TCP port on loopback; 0 picks a free one.
        band: ``LOW:HIGH`` to show that window's integral instead of the run's own property.
        refresh_s: seconds between refreshes of each tab.
        address: a loopback address.
        truth: a digital twin's noise-free spectra at every candidate ``(m, c)``, for the discovery curve.

    Raises:
        ConfigError: a non-loopback address, or the port is taken.

    Examples:
        >>> server = ViewServer(run_path, NoCampaign(), port=0)
        >>> server.url.startswith("http://127.0.0.1:")
        True
        >>> server.close()
    """

    def __init__(
        self,
        path: Path,
        link: CampaignLink,
        *,
        port: int = 0,
        band: str = "",
        refresh_s: float = 1.0,
        address: str = "127.0.0.1",
        truth: NDArray[np.floating] | None = None,
    ):
        if address not in LOOPBACK:
            raise ConfigError(f"the view binds loopback only ({', '.join(LOOPBACK)}), not {address!r}")
        if refresh_s <= 0:
            raise ConfigError(f"refresh_s must be > 0, got {refresh_s}")
        listening = _listen(address, port)
        self.port = int(listening.getsockname()[1])
        sockets = [listening]
        self.url = f"http://{'[::1]' if address == '::1' else address}:{self.port}/"

        def page(doc: Document) -> None:
            LivePage(doc, path, link, band, refresh_s, truth)

        origins = [f"{host}:{self.port}" for host in ("127.0.0.1", "localhost", "[::1]")]
        self._loop: IOLoop | None = None
        self._server: BaseServer | None = None
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            app = BokehTornado({"/": Application(FunctionHandler(page))}, extra_websocket_origins=origins)
            http = HTTPServer(app)
            http.add_sockets(sockets)
            self._server = BaseServer(self._loop, app, http)
            self._server.start()
            ready.set()
            self._loop.start()
            self._loop.close(all_fds=True)

        self._thread = threading.Thread(target=serve, name="dualscope-view", daemon=True)
        self._thread.start()
        ready.wait()

    def close(self) -> None:
        """Stop serving: close the listening socket and every tab's connection."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        def stop() -> None:
            server.stop(wait=False)
            loop.stop()

        loop.add_callback(stop)
        self._thread.join(timeout=10)
        self._loop = None


def _listen(address: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``address:port`` (closed again if it cannot bind)."""
    family = socket.AF_INET6 if address == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1" if address == "localhost" else address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {address} is taken; choose another with --port (0: any)") from None
        raise ConfigError(f"cannot listen on {address}:{port} ({exc.strerror})") from None
    return sock
