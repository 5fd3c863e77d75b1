"""`backline generator-server`: serve a generator to stage boxes over WebSocket (issue #17)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

from engine.errors import BacklineError
from engine.service.notify import Notifier

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from engine.generator.options import add_generator_arguments

    server = sub.add_parser("generator-server", help="serve the generator to stage boxes over WebSocket (the GPU box)")
    server.add_argument("--listen", default="127.0.0.1:9400", metavar="HOST:PORT",
                        help="address to listen on (default 127.0.0.1:9400; beyond loopback a token is required)")
    server.add_argument("--token-file", type=Path, default=None,
                        help="file holding the clients' token (default: $BACKLINE_GENERATOR_TOKEN)")
    server.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve wss:// (with --tls-key)")
    server.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    server.add_argument("--zeroconf", action=argparse.BooleanOptionalAction, default=None,
                        help="announce it on the network as _backline-gen._tcp (default: when listening beyond loopback)")
    server.add_argument("--max-sessions", type=int, default=1,
                        help="stage boxes served at once (default 1: a GPU steps one mrt2_small stream in real time)")
    add_generator_arguments(server, remote=False)
    server.set_defaults(func=_cmd_server)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BacklineError(f"--listen must be HOST:PORT (e.g. 0.0.0.0:9400), got {text!r}")
    return host.strip("[]"), int(port)


def _cmd_server(args: argparse.Namespace) -> int:
    from engine.generator import check_magenta, create_generator, token_from
    from engine.generator.options import generator_options
    from engine.remote.server import GeneratorServer

    if args.max_sessions < 1:
        raise BacklineError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    host, port = parse_listen(args.listen)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise BacklineError("TLS needs both --tls-cert and --tls-key")
    token = token_from(args.token_file)
    options = generator_options(args)
    if args.generator == "magenta":
        check_magenta(options)  # the weights and MusicCoCa files, once, before any client comes
        from engine.style.musiccoca import style_model_for

        embedder = style_model_for(options)
    else:
        from engine.style.embedder import HashEmbedder

        embedder = HashEmbedder()

    def factory():  # one a session; magenta in a child process of its own
        return create_generator(args.generator, process=args.generator == "magenta", **options)

    server = GeneratorServer(factory, host=host, port=port, token=token, max_sessions=args.max_sessions,
                             embedder=embedder, tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)
    notifier = Notifier()

    def stop(*_: object) -> None:
        notifier.stopping("closing the sessions")
        server.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    print(f"backline generator-server: {args.generator} on {server.scheme}://{host}:{server.port}", flush=True)
    announcement = None
    if args.zeroconf or (args.zeroconf is None and host not in ("127.0.0.1", "localhost", "::1")):
        try:
            from engine.discovery import SERVICE, Announcement

            announcement = Announcement(host, [(SERVICE, server.port, {"scheme": server.scheme, "generator": args.generator,
                                                                       "max_sessions": str(args.max_sessions)})])
        except Exception as err:  # noqa: BLE001 - no multicast, no zeroconf: serve unannounced
            log.warning("generator server: not announced on the network (%s: %s)", type(err).__name__, err)
    notifier.ready(f"serving {args.generator} on {host}:{server.port}")
    if notifier.watchdog_interval_s is not None:
        probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        threading.Thread(target=_watchdog, args=(notifier, f"{server.scheme}://{_bracket(probe)}:{server.port}", token,
                                                 args.tls_cert),
                         name="generator-watchdog", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        if announcement is not None:
            announcement.close()
    log.info("generator server stopped: %s", server.status())
    notifier.close()
    return 0


def _watchdog(notifier: Notifier, url: str, token: str | None, ca: Path | None) -> None:
    """The watchdog thread: WATCHDOG=1 only while the server answers a status request through its
    own socket, so a wedged accept loop or a starved interpreter gets the server restarted."""
    from engine.generator.remote import server_status

    assert notifier.watchdog_interval_s is not None
    while notifier.enabled:
        try:
            status = server_status(url, token=token, timeout=notifier.watchdog_interval_s, ca=ca, check_hostname=False)
        except BacklineError as err:
            log.warning("generator server: its own status probe failed (%s); the watchdog is not fed", err)
        else:
            notifier.send(WATCHDOG=1, STATUS=f"{len(status['sessions'])} of {status['max_sessions']} session(s); "
                                                f"refused {status['refused']}, malformed {status['malformed']}")
        time.sleep(notifier.watchdog_interval_s)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
