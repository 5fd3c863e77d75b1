"""Crash-recovery state: atomic saves, coalescing, restore, corrupt files set aside."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from engine.service.state import StateStore


class Source:
    """Stands in for Engine.snapshot_state: a value the test changes, counting snapshots."""

    def __init__(self) -> None:
        self.value = {"patch": "patches/default.yaml", "params": {"style.0.weight": 1.0}, "tempo": 120.0}
        self.calls = 0
        self.lock = threading.Lock()

    def snapshot(self) -> dict:
        with self.lock:
            self.calls += 1
            return json.loads(json.dumps(self.value))


def test_save_and_restore_round_trip(tmp_path: Path) -> None:
    source = Source()
    store = StateStore(tmp_path / "state" / "state.json", snapshot=source.snapshot)
    store.save_now()
    assert StateStore(store.path, snapshot=dict).load() == source.value
    assert [p.name for p in store.path.parent.iterdir()] == ["state.json"]  # no temporary file left


def test_save_replaces_the_file_by_rename(tmp_path: Path) -> None:
    source = Source()
    store = StateStore(tmp_path / "state.json", snapshot=source.snapshot)
    store.save_now()
    before = store.path.stat().st_ino
    handle = store.path.open()  # a reader holding the old file sees it whole
    source.value["tempo"] = 133.0
    store.save_now()
    assert store.path.stat().st_ino != before
    assert json.load(handle)["engine"]["tempo"] == 120.0
    handle.close()
    assert store.load()["tempo"] == 133.0


def test_changes_are_coalesced_and_the_newest_is_written(tmp_path: Path) -> None:
    source = Source()
    store = StateStore(tmp_path / "state.json", snapshot=source.snapshot, min_interval_s=0.2)
    store.start()
    for i in range(500):
        with source.lock:
            source.value["params"]["style.0.weight"] = i / 500
        store.mark_dirty()
    store.close()
    assert 1 <= store.writes <= 5, store.writes
    assert store.load()["params"]["style.0.weight"] == pytest.approx(499 / 500)


@pytest.mark.parametrize("text", ['{"version": 1, "engine": {"tempo": 12', "\x00\x01garbage", '{"version": 99, "engine": {}}', "[]"])
def test_corrupt_file_is_set_aside_and_reported(tmp_path: Path, caplog, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    store = StateStore(path, snapshot=dict)
    with caplog.at_level(logging.ERROR, logger="engine.service.state"):
        assert store.load() is None
    assert not path.exists()
    assert store.set_aside is not None and store.set_aside.name.startswith("state.json.corrupt-")
    assert store.set_aside.read_text() == text
    assert "corrupt" in caplog.text and str(store.set_aside) in caplog.text


def test_two_corrupt_files_in_one_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    aside = []
    for text in ("{", "}"):
        path.write_text(text)
        store = StateStore(path, snapshot=dict)
        store.load()
        aside.append(store.set_aside)
    assert aside[0] != aside[1] and aside[0].read_text() == "{" and aside[1].read_text() == "}"


def test_missing_file_is_a_fresh_start(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state.json", snapshot=dict).load() is None


def test_a_failing_snapshot_is_logged_and_keeps_the_old_file(tmp_path: Path, caplog) -> None:
    source = Source()
    store = StateStore(tmp_path / "state.json", snapshot=source.snapshot)
    store.save_now()

    def broken() -> dict:
        raise RuntimeError("engine is gone")

    broken_store = StateStore(store.path, snapshot=broken)
    with caplog.at_level(logging.ERROR, logger="engine.service.state"):
        broken_store.save_now()
    assert broken_store.writes == 0 and "engine is gone" in caplog.text
    assert store.load() == source.value


def test_a_version_1_state_file_is_upgraded_not_set_aside(tmp_path: Path) -> None:
    """The state file of the release before (version 1: tempo, weights, sampling as keys) is read
    as version 2, so the first restart after an upgrade still resumes the show."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "engine": {
        "patch": "/etc/backline/patches/verse.yaml", "tempo": 97.0, "meter": 3, "style_weights": [1.0, 0.25],
        "centroid_weights": [0.5], "mean_weight": 0.1, "gain": 0.8, "playing": True,
        "sampling": {"temperature": 0.9, "top_k": 30, "cfg_style": 4.0, "cfg_notes": 1.0, "cfg_drums": 2.0}}}))
    store = StateStore(path, snapshot=dict)
    assert store.load() == {"patch": "/etc/backline/patches/verse.yaml", "values": {
        "tempo.bpm": 97.0, "meter.beats_per_bar": 3, "mean.weight": 0.1, "master.gain": 0.8, "transport.playing": True,
        "style.0.weight": 1.0, "style.1.weight": 0.25, "centroid.0.weight": 0.5, "sampling.temperature": 0.9,
        "sampling.top_k": 30, "sampling.cfg_style": 4.0, "sampling.cfg_notes": 1.0, "sampling.cfg_drums": 2.0}}
    assert store.set_aside is None and path.exists()


def test_a_saved_state_that_no_longer_fits_its_patch_is_not_half_restored(tmp_path: Path) -> None:
    """The patch file lost a slot between the crash and the restart: restoring raises ValueError
    (the runner then plays the patch as written) and nothing of the saved state was applied,
    not even its tempo."""
    from engine.audio.offline import OfflineSink
    from engine.engine import Engine
    from engine.generator.synth import SynthGenerator
    from engine.patch import parse_patch

    patch = parse_patch({"name": "p", "tempo": 120, "style": [{"text": "only slot"}]})
    engine = Engine(patch=patch, generator=SynthGenerator(), status_line=False,
                    sink_factory=lambda ring: OfflineSink(ring, tmp_path / "x.wav", end=lambda: 0))
    before = engine.scheduler.state
    with pytest.raises(ValueError, match="style slot 1 does not exist"):
        engine.restore_state({"patch": None, "values": {"tempo.bpm": 97.0, "style.0.weight": 0.5,
                                                        "style.1.weight": 0.25}})
    assert engine.scheduler.timeline.segments[0].bpm == 120
    assert engine.scheduler.state == before
    engine.sink.close()
