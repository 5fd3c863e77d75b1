"""CLI subcommands of the stage service: `serve`, `status` and `install-service`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from engine.service import install
from engine.service.config import load_config
from engine.service.health import query_http, query_osc


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the service subcommands on the main `backline` parser."""
    p = subparsers.add_parser("serve", help="run as a service: config file, sd_notify, crash recovery, SIGHUP reload")
    p.add_argument("--config", help="config file (default $BACKLINE_CONFIG, then /etc/backline/config.yaml)")
    add_web_port(p)
    p.set_defaults(func=_serve)

    p = subparsers.add_parser("status", help="ask the running engine for its status (OSC /backline/status)")
    p.add_argument("--config", help="config file that names the OSC port (default $BACKLINE_CONFIG, then /etc/backline/config.yaml)")
    p.add_argument("--host", help="OSC host (default: the config's, loopback if it listens on all addresses)")
    p.add_argument("--port", type=int, help="OSC port (default: the config's)")
    p.add_argument("--http", metavar="URL", help="read the HTTP health endpoint instead, e.g. http://127.0.0.1:8080/status")
    p.add_argument("--server", metavar="URL", help="a generator server's sessions instead, e.g. ws://gpu-box:9400")
    p.add_argument("--token-file", type=Path, help="the generator server's token (default: $BACKLINE_GENERATOR_TOKEN)")
    p.add_argument("--ca", type=Path, help="for a wss:// server: the CA or self-signed certificate to trust")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for the answer (default 1)")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("install-service", help="create the user and folders, install and enable the systemd unit")
    p.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    p.add_argument("--user", default="backline", help="service user (default backline, in group audio)")
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this root instead of / (images)")
    p.add_argument("--skip-user", action="store_true", help="do not create the user")
    p.add_argument("--skip-systemctl", action="store_true", help="do not run systemctl (daemon-reload, enable)")
    p.add_argument("--start", action="store_true", help="start the service now too (systemctl enable --now)")
    p.set_defaults(func=_install)


def add_web_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=_port, metavar="PORT",
                        help="serve the control page and /status on this port (0: any free one; default: the "
                             "config's web.port, else off). Loopback unless web.host says otherwise")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number 0..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number 0..65535, got {port}")
    return port


def _serve(args: argparse.Namespace) -> int:
    from engine.service.runner import serve

    return serve(args.config, web_port=args.web_port)


def _status(args: argparse.Namespace) -> int:
    if args.server:
        return _server_status(args)
    if args.http:
        status = query_http(args.http, timeout_s=args.timeout)
    else:
        config = load_config(args.config)
        host = args.host or ("127.0.0.1" if config.osc_host in ("0.0.0.0", "") else "::1" if config.osc_host == "::" else config.osc_host)
        status = query_osc(host, args.port or config.osc_port, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(status, default=str))
    else:
        # OSC floats are 32-bit: print them to 6 significant digits, not their binary noise; a value
        # with spaces (a patch name, the realtime reason) is shell-quoted so the line still splits
        print(" ".join(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={shlex.quote(str(value))}"
                       for key, value in status.items()))
    return 0


def _server_status(args: argparse.Namespace) -> int:
    """A generator server's sessions: one line each (peer, generator, frames, speed, round trip, underruns)."""
    from engine.generator import token_from
    from engine.generator.remote import server_status

    status = server_status(args.server, token=token_from(args.token_file), timeout=max(args.timeout, 1.0), ca=args.ca)
    if args.json:
        print(json.dumps(status))
        return 0
    print(f"{args.server}: {len(status['sessions'])} of {status['max_sessions']} session(s); refused {status['refused']}, "
          f"malformed {status['malformed']}")
    for session in status["sessions"]:
        print("  " + " ".join(f"{key}={value}" for key, value in session.items()))
    return 0


def _install(args: argparse.Namespace) -> int:
    steps = install.plan(root=args.root, user=args.user, create_user=not args.skip_user,
                         systemctl=not args.skip_systemctl, start=args.start)
    if args.dry_run:
        for step in steps:
            print(step.command)
        return 0
    if args.root == Path("/") and os.geteuid() != 0:
        print("error: install-service needs root (try sudo, or --dry-run to see the steps)", file=sys.stderr)
        return 1
    install.execute(steps)
    print(f"installed {len(steps)} steps; edit /etc/backline/config.yaml, then `systemctl start backline`")
    return 0
