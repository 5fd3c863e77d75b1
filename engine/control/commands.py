"""CLI subcommands of the control layer: `params`, `mappings`, `osc-docs`, `learn`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from engine.control.dispatcher import Dispatcher
from engine.control.learn import Learner
from engine.control.mapping import MappingError, load_file
from engine.control.midi_io import MidiHub
from engine.control.osc_space import describe_osc
from engine.params import ControlEvent, describe_parameters

log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the control subcommands on the main `backline` parser."""
    p = subparsers.add_parser("params", help="print the parameter space")
    p.set_defaults(func=_params)
    p = subparsers.add_parser("mappings", help="validate mapping files and list their rules")
    p.add_argument("files", nargs="*", type=Path, default=sorted(Path("mappings").glob("*.yaml")))
    p.set_defaults(func=_mappings)
    p = subparsers.add_parser("osc-docs", help="print the OSC address space as markdown (docs/osc.md)")
    p.set_defaults(func=_osc_docs)
    p = subparsers.add_parser("learn", help="bind the next moved MIDI control to a target and save it")
    p.add_argument("target", help="parameter path or action, e.g. style.0.weight")
    p.add_argument("--file", type=Path, default=Path("mappings/learned.yaml"), help="mapping file to add the rule to")
    p.add_argument("--api", choices=("alsa", "jack"), default="alsa", help="rtmidi API")
    p.add_argument("--port", default="*", help="input port name pattern (glob)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a control to move")
    p.set_defaults(func=_learn)


def _params(args: argparse.Namespace) -> int:
    print(describe_parameters())
    return 0


def _osc_docs(args: argparse.Namespace) -> int:
    print(describe_osc())
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


def _learn(args: argparse.Namespace) -> int:
    dispatcher = Dispatcher(_Offline())
    learner = Learner(dispatcher, file=args.file)
    problem = learner.arm(args.target)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with MidiHub(dispatcher, api=args.api, inputs=[args.port]) as hub:
        if not hub.inputs:
            print(f"waiting for a MIDI input matching {args.port!r} ({args.api})", file=sys.stderr)
        print(f"move a control to bind it to {args.target}", file=sys.stderr)
        if not learner.done.wait(args.timeout):
            print(f"no control moved within {args.timeout:g} s", file=sys.stderr)
            return 1
    if learner.error is not None:
        print(learner.error, file=sys.stderr)
        return 1
    print(f"saved to {args.file}: {learner.result}")
    return 0
