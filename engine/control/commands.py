"""CLI subcommands of the control layer: `params`, `mappings`, `osc-docs`, `web-docs`, `learn`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from engine.control.mapping import MappingError, load_file
from engine.control.midi_io import list_ports
from engine.control.osc_space import describe_osc
from engine.control.surfaces import ControlSurfaces
from engine.params import ControlEvent, describe_parameters
from engine.service.config import load_config

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the control subcommands on the main `backline` parser."""
    p = subparsers.add_parser("params", help="print the parameter space")
    p.set_defaults(func=_params)
    p = subparsers.add_parser("mappings", help="validate mapping files and count their controls and outputs")
    p.add_argument("files", nargs="*", type=Path, default=sorted(Path("mappings").glob("*.yaml")))
    p.set_defaults(func=_mappings)
    p = subparsers.add_parser("osc-docs", help="print the OSC address space as markdown (docs/osc.md)")
    p.set_defaults(func=_osc_docs)
    p = subparsers.add_parser("web-docs", help="print the web page's WebSocket messages as markdown (docs/web.md)")
    p.set_defaults(func=_web_docs)
    p = subparsers.add_parser("learn", help="bind the next moved MIDI control to a target and save it",
                              description="Bind the next moved MIDI control to TARGET and save it to the learn file, "
                                          "which the engine loads on its next start (or on SIGHUP). Defaults come "
                                          "from the config file (learn_file, midi.api, midi.inputs).")
    p.add_argument("target", help="parameter path or action, e.g. style.0.weight")
    p.add_argument("--config", type=Path, default=None, help="config file (default: $BACKLINE_CONFIG, /etc/backline/config.yaml)")
    p.add_argument("--file", type=Path, default=None, help="mapping file to add the rule to (default: the config's learn_file)")
    p.add_argument("--api", choices=("alsa", "jack"), default=None, help="rtmidi API (default: the config's midi.api)")
    p.add_argument("--port", default=None, help="input port name pattern, a glob (default: the config's midi.inputs)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a control to move")
    p.set_defaults(func=_learn)


def _params(args: argparse.Namespace) -> int:
    print(describe_parameters())
    return 0


def _osc_docs(args: argparse.Namespace) -> int:
    print(describe_osc(), end="")  # `backline osc-docs > docs/osc.md` writes the file exactly
    return 0


def _web_docs(args: argparse.Namespace) -> int:
    from engine.web.messages import describe_web

    print(describe_web(), end="")  # `backline web-docs > docs/web.md`
    return 0


def _mappings(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            f = load_file(path)
        except MappingError as err:
            print(err, file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {f.name}: {len(f.rules)} controls, {len(f.outputs)} outputs")
    return status


class _Offline:
    """A control target with no engine behind it: learn only needs the MIDI side."""

    def submit(self, event: ControlEvent) -> None:
        log.debug("offline: %s", event)

    def status(self) -> dict[str, object]:
        return {}

    def add_listener(self, fn: Callable[[str, object, str], None]) -> None:
        return None

    def value_of(self, path: str) -> object:
        return None

    def playhead(self) -> int:
        return 0


def _learn(args: argparse.Namespace) -> int:
    """Learn with the same ControlSurfaces the engine builds, minus OSC and the engine."""
    config = load_config(args.config)
    file = args.file or config.learn_file
    api = args.api or config.midi_api
    patterns = [args.port] if args.port else list(config.midi_inputs)
    with ControlSurfaces(_Offline(), learn_file=file, midi_api=api, midi_inputs=patterns, osc_port=None) as surfaces:
        if surfaces.midi is None:
            return 1  # ControlSurfaces logged why the MIDI API could not open
        problem = surfaces.learner.arm(args.target)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        if not surfaces.midi.inputs:
            inputs, _ = list_ports(api=api)
            print(f"waiting for a MIDI input matching {', '.join(patterns)} ({api}); inputs now: "
                  f"{', '.join(inputs) or 'none'}", file=sys.stderr)
        print(f"move a control to bind it to {args.target}", file=sys.stderr, flush=True)
        if not surfaces.learner.done.wait(args.timeout):
            print(f"no control moved within {args.timeout:g} s", file=sys.stderr)
            return 1
    if surfaces.learner.error is not None:
        print(surfaces.learner.error, file=sys.stderr)
        return 1
    print(f"saved to {file}: {surfaces.learner.result}; the engine loads it on its next start or SIGHUP")
    return 0
