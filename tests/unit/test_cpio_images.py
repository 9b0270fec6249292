"""The overlay cpio writer and the image cache keys."""

import shutil
import subprocess

import pytest

from orchestrator import cpio, images


def test_cpio_round_trip_with_parents_and_modes():
    data = cpio.build({"init": (b"#!/bin/sh\n", 0o755), "etc/testbed/a.cfg": b"x = 1\n", "/boot/guest/k": b"\0" * 5})
    assert len(data) % 512 == 0
    files = cpio.read(data)
    assert files["init"] == (0o100755, b"#!/bin/sh\n")
    assert files["etc"][0] == 0o040755 and files["etc/testbed"][0] == 0o040755
    assert files["boot/guest/k"][1] == b"\0" * 5


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_reads_the_archive(tmp_path):
    data = cpio.build({"init": (b"echo hi\n", 0o755), "etc/x": b"y"})
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True).stdout
    assert listing.decode().split() == ["etc", "etc/x", "init"]


def test_bad_archive_is_refused():
    with pytest.raises(ValueError, match="bad cpio magic"):
        cpio.read(b"not a cpio archive" * 10)


def test_cache_keys_are_stable_and_follow_their_inputs(monkeypatch, tmp_path):
    keys = images.cache_keys("stock")
    assert keys == images.cache_keys("stock")
    assert set(keys) == {"kernel", "xen-stock", "guest-initramfs", "dom0-rootfs", "vcpu-plugin"}
    # Changing the guest's /init changes only the guest initramfs key.
    guest_init = images.ROOT / "guest_agents" / "guest-init.sh"
    copy = tmp_path / "guest-init.sh"
    copy.write_text(guest_init.read_text() + "\n# changed\n")
    real_recipes = images.recipes

    def patched(variant="stock"):
        table = real_recipes(variant)
        r = table["guest-initramfs"]
        table["guest-initramfs"] = images.Recipe(r.name, r.script, inputs=(copy,), needs=r.needs)
        return table
    monkeypatch.setattr(images, "recipes", patched)
    changed = images.cache_keys("stock")
    assert changed["guest-initramfs"] != keys["guest-initramfs"]
    assert {k: v for k, v in changed.items() if k != "guest-initramfs"} == \
        {k: v for k, v in keys.items() if k != "guest-initramfs"}


def test_failed_recipe_leaves_no_image_and_names_its_log(monkeypatch, tmp_path):
    script = tmp_path / "fail.sh"
    script.write_text("echo '[fail] step one'; echo oops >&2; exit 3\n")
    monkeypatch.setattr(images, "IMAGES", tmp_path)
    recipe = images.Recipe("demo", "fail.sh")
    target = tmp_path / "cache" / "demo-abc"
    target.parent.mkdir()
    seen = []
    with pytest.raises(images.ImageError) as info:
        images._build(recipe, target, [], seen.append)
    assert not target.exists()
    assert "exit 3" in str(info.value) and "oops" in str(info.value)
    assert info.value.log_path.exists()
    assert "image demo: [fail] step one" in seen


def test_the_vcpu_plugin_key_follows_the_installed_qemu(monkeypatch):
    """The plugin is built against the header of the host's QEMU: a QEMU upgrade rebuilds it."""
    before = images.cache_keys("stock")
    monkeypatch.setattr(images, "installed_qemu", lambda: "1:9.9+dfsg-1")
    after = images.cache_keys("stock")
    assert after["vcpu-plugin"] != before["vcpu-plugin"]
    assert {k: v for k, v in after.items() if k != "vcpu-plugin"} == {k: v for k, v in before.items() if k != "vcpu-plugin"}
