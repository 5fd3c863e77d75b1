"""The page's JSON messages: docs/web.md is generated from them, and what parse refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.control.rejects import Reject
from engine.web.messages import LearnMessage, ParameterMessage, describe_web, parse

REPO = Path(__file__).resolve().parents[2]


def test_docs_web_md_is_the_generated_one() -> None:
    assert (REPO / "docs/web.md").read_text() == describe_web(), "run `backline web-docs > docs/web.md`"


def test_a_message_becomes_the_osc_message_of_its_path() -> None:
    assert parse('{"path": "sampling.temperature", "value": 1.5}') == ParameterMessage("/backline/sampling/temperature", (1.5,))
    assert parse('{"path": "tempo.tap"}') == ParameterMessage("/backline/tempo/tap", ())
    assert parse('{"path": "style.0.weight", "value": 1, "quantize": "bar"}') == \
        ParameterMessage("/backline/style/0/weight", (1, "bar"))
    assert parse('{"learn": "master.gain"}') == LearnMessage("master.gain")


@pytest.mark.parametrize(("text", "reason"), [
    (b"\x00\x01", "malformed"), ("{", "malformed"), ('"a string"', "malformed"), ('{"value": 1}', "malformed"),
    ('{"path": "x", "value": {"a": 1}}', "wrong_type"), ('{"path": "x", "value": Infinity}', "malformed"),
    ('{"path": "x", "value": 1e999}', "not_finite"), ('{"path": "x", "quantize": "soon"}', "bad_value"),
    ('{"learn": 3}', "wrong_type"), ("[" * 100000, "malformed"),
])
def test_what_is_not_a_message_is_refused_with_a_reason(text, reason) -> None:
    with pytest.raises(Reject) as info:
        parse(text)
    assert info.value.reason == reason


def test_the_pages_url_as_a_qr_code_for_the_terminal(capsys) -> None:
    from engine.web.server import print_qr

    print_qr("http://192.168.1.20:8080/?token=abcdefgh")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 15 and len(set(map(len, lines))) == 1  # a square of block characters
    assert set("".join(lines)) <= set("\xa0 ▀▄█")  # qrcode draws its blanks as no-break spaces
