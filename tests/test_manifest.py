"""run.json: finished stages are skipped only while their inputs are unchanged."""

from finetune.manifest import Manifest, stable_hash


def test_stage_skipped_only_with_same_key_and_outputs(tmp_path):
    output = tmp_path / "out.txt"
    output.write_text("x")
    manifest = Manifest(tmp_path)
    manifest.start("data", "k1")
    manifest.finish("data", "k1", {"file": str(output)}, 1.0)
    manifest.start("config", "k2")
    manifest.finish("config", "k2", {}, 1.0)

    again = Manifest(tmp_path)
    assert again.data["versions"]["finetune"]
    assert again.is_done("data", "k1") and again.is_done("config", "k2")

    changed = Manifest(tmp_path)
    assert not changed.is_done("data", "other key")
    assert not changed.is_done("config", "k2")  # everything after a changed stage reruns

    output.unlink()
    missing = Manifest(tmp_path)
    assert not missing.is_done("data", "k1")


def test_interrupted_stage_is_not_done(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.start("train", "k")
    assert not Manifest(tmp_path).is_done("train", "k")


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
