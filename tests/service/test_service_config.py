"""Config file: the shipped example, validation errors (file, key path, reason), env overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.service.config import ServiceConfig, ServiceConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "systemd/config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_example_is_valid_and_matches_the_defaults() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.differences(ServiceConfig(file=None)) == []


def test_values_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
output: alsa
device: USB
connect: [system:playback_3, system:playback_4]
osc: {port: 9100, allow: [192.168.1.0/24]}
midi: {api: jack, inputs: ["nanoKONTROL*"]}
mappings: [mappings/nano.yaml]
patch: ../show/opener.yaml
generator: {name: magenta, options: {size: mrt2_small}}
fallback: null
web: {host: 0.0.0.0, port: 8080, token: stage-secret-1}
"""), environ={})
    assert (config.output, config.device) == ("alsa", "USB")
    assert config.connect == ("system:playback_3", "system:playback_4")
    assert (config.osc_port, config.osc_allow) == (9100, ("192.168.1.0/24",))
    assert (config.midi_api, config.midi_inputs) == ("jack", ("nanoKONTROL*",))
    assert config.mappings == (tmp_path / "mappings/nano.yaml",)
    assert config.patch == tmp_path.parent / "show/opener.yaml"
    assert (config.generator, config.generator_options, config.fallback) == ("magenta", {"size": "mrt2_small"}, None)
    assert (config.web_host, config.web_port, config.web_token) == ("0.0.0.0", 8080, "stage-secret-1")


def test_status_http_of_an_older_config_is_read_as_web(tmp_path, caplog) -> None:
    """A stage box's config from before the web page keeps its `/status` endpoint (same paths)."""
    config = load_config(write(tmp_path, "status_http: {port: 8081}\n"), environ={})
    assert (config.web_host, config.web_port) == ("127.0.0.1", 8081)
    assert "status_http is served by the web page's server now" in caplog.text
    with pytest.raises(ServiceConfigError, match="remove status_http"):
        load_config(write(tmp_path, "status_http: {port: 8081}\nweb: {port: 8082}\n"), environ={})


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("output: pulse", "output", "does not match"),
    ("osc: {port: 70000}", "osc.port", "70000 is greater than the maximum of 65535"),
    ("osc: {port: nine}", "osc.port", "'nine' is not of type 'integer'"),
    ("clock: {source: quartz}", "clock.source", "'quartz' is not one of"),
    ("generator: {name: synth, size: 3}", "generator", "'size' was unexpected"),
    ("mappings: [a.yaml, '']", "mappings[1]", "should be non-empty"),
    ("lookahead_ms: 0", "lookahead_ms", "less than or equal to the minimum of 0"),
    ("outptu: jack", "<top>", "'outptu' was unexpected"),
    ("- just\n- a list", "<top>", "expected a mapping of keys"),
    ("osc: {port: 9000\n", "line 2, column 1", "invalid YAML"),
])
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ServiceConfigError) as info:
        load_config(path, environ={})
    assert info.value.file == str(path)
    assert info.value.key_path == key
    assert reason in info.value.problem
    assert str(path) in str(info.value) and key in str(info.value)


def test_missing_named_file_is_an_error_missing_default_is_defaults(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ServiceConfigError, match="no such file"):
        load_config(environ={"BACKLINE_CONFIG": str(tmp_path / "nope.yaml")})


def test_env_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "output: wav:/tmp/x.wav")
    assert load_config(environ={"BACKLINE_CONFIG": str(path)}).output == "wav:/tmp/x.wav"


def test_environment_overrides_single_keys_with_types(tmp_path: Path) -> None:
    path = write(tmp_path, "output: jack\nosc: {host: 0.0.0.0, port: 9000}\n")
    config = load_config(path, environ={
        "BACKLINE_OUTPUT": "alsa",
        "BACKLINE_DEVICE": "3",
        "BACKLINE_OSC__PORT": "9001",
        "BACKLINE_MIDI__INPUTS": '["nano*", "Launch*"]',
        "BACKLINE_LOOKAHEAD_MS": "320.5",
        "BACKLINE_WEB__PORT": "8080",
        "BACKLINE_FALLBACK": "null",
    })
    assert (config.output, config.device) == ("alsa", 3)
    assert (config.osc_host, config.osc_port) == ("0.0.0.0", 9001)  # the file's other key in the section stays
    assert config.midi_inputs == ("nano*", "Launch*")
    assert config.lookahead_ms == 320.5
    assert config.web_port == 8080
    assert config.fallback is None


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "osc: {port: 9000}")
    with pytest.raises(ServiceConfigError) as info:
        load_config(path, environ={"BACKLINE_OSC__PORT": "not-a-port"})
    assert info.value.file == "$BACKLINE_OSC__PORT"
    assert info.value.key_path == "osc.port"


def test_an_unknown_variable_is_warned_about_and_ignored(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, "output: jack")
    with caplog.at_level(logging.WARNING, logger="engine.service.config"):
        config = load_config(path, environ={"BACKLINE_OUTPTU": "alsa", "BACKLINE_OSC__PROT": "1"})
    assert config.output == "jack"
    text = caplog.text
    assert "BACKLINE_OUTPTU" in text and "BACKLINE_OSC__PROT" in text


def test_differences_list_what_a_reload_changed(tmp_path: Path) -> None:
    old = load_config(write(tmp_path, "fade_s: 1\noutput: jack"), environ={})
    new = load_config(write(tmp_path, "fade_s: 3\noutput: alsa"), environ={})
    assert sorted(old.differences(new)) == ["fade_s", "output"]


def test_rollback_and_its_margin_bounds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "rollback: false\nlookahead: {min_ms: 20, max_ms: 120}\n"), environ={})
    assert config.rollback is False and config.margin_ms == (20.0, 120.0)
    assert load_config(write(tmp_path, "lookahead: {max_ms: 50}\n"), environ={}).margin_ms == (10.0, 50.0)
    with pytest.raises(ServiceConfigError, match=r"lookahead: min_ms 80 is above max_ms 50"):
        load_config(write(tmp_path, "lookahead: {min_ms: 80, max_ms: 50}\n"), environ={})
    with pytest.raises(ServiceConfigError, match="lookahead.min_ms"):
        load_config(write(tmp_path, "lookahead: {min_ms: -1}\n"), environ={})


def test_run_no_rollback_turns_it_off(tmp_path: Path) -> None:
    import argparse

    from engine.service.run_command import add_commands, config_from_args

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    patch = tmp_path / "p.yaml"
    patch.write_text("tempo: 120\nstyle: [{text: a}]\n")
    assert config_from_args(parser.parse_args(["run", "--patch", str(patch)])).rollback is True
    assert config_from_args(parser.parse_args(["run", "--patch", str(patch), "--no-rollback"])).rollback is False
