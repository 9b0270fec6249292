"""Stage 3: build (or reuse) the images a run boots.

Each image is made by a bash recipe in `images/` and cached in
`images/cache/<name>-<key>/`, where the key hashes everything the recipe reads:
the recipe, `images/lib.sh`, `images/pins.env`, its own inputs and the keys of
the images it is built from. A folder only appears once its recipe succeeded,
so a cache hit is always a whole image.
"""

import fcntl
import hashlib
import os
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import progress as progress_bars
from .errors import ImageError

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
PATCHES = ROOT / "hypervisor_patch"
CACHE = Path(os.environ.get("TESTBED_CACHE", IMAGES / "cache"))
COMMON_INPUTS = (IMAGES / "lib.sh", IMAGES / "pins.env")


@dataclass(frozen=True)
class Recipe:
    name: str
    script: str
    inputs: tuple = ()  # extra files whose content is part of the key
    needs: tuple = ()  # names of images passed as arguments after OUT
    env: dict = field(default_factory=dict)
    facts: tuple = ()  # callables -> text: host facts the image depends on, part of the key


def installed_qemu():
    """The source version of the host's QEMU: the vCPU plugin is built against its header."""
    done = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-system-x86"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "not installed"


def xen_patches(variant):
    """The patch series of a hypervisor variant, from hypervisor_patch/series-<variant>."""
    series = PATCHES / f"series-{variant}"
    if not series.exists():
        return ()
    names = [ln.split("#")[0].strip() for ln in series.read_text().splitlines()]
    return tuple(PATCHES / n for n in names if n)


def recipes(variant="stock"):
    patches = xen_patches(variant)
    fragment = PATCHES / "xen.config"
    return {
        "kernel": Recipe("kernel", "fetch-kernel.sh"),
        f"xen-{variant}": Recipe(f"xen-{variant}", "build-xen.sh", inputs=(fragment, *patches),
                                 env={"XEN_PATCHES": " ".join(str(p) for p in patches),
                                      "XEN_CONFIG_FRAGMENT": str(fragment)}),
        "guest-initramfs": Recipe("guest-initramfs", "build-guest-initramfs.sh",
                                  inputs=(ROOT / "guest_agents" / "guest-init.sh", ROOT / "guest_agents" / "rtagent.sh",
                                          ROOT / "guest_agents" / "tsccal.c", ROOT / "guest_agents" / "icsstorm.c",
                                          ROOT / "guest_agents" / "framesend.c", ROOT / "guest_agents" / "freestanding.h"),
                                  needs=("kernel",)),
        "dom0-rootfs": Recipe("dom0-rootfs", "build-dom0-rootfs.sh", needs=("kernel",)),
        "vcpu-plugin": Recipe("vcpu-plugin", "build-vcpu-plugin.sh", inputs=(IMAGES / "plugin" / "vcpucount.c",),
                              facts=(installed_qemu,)),
    }


def _digest(paths, extra=()):
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update((str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    for item in extra:
        h.update(str(item).encode() + b"\0")
    return h.hexdigest()[:16]


def cache_keys(variant="stock"):
    """Key of every image, without building anything."""
    table = recipes(variant)
    keys = {}

    def key(name):
        if name not in keys:
            r = table[name]
            missing = [p for p in (IMAGES / r.script, *r.inputs) if not Path(p).exists()]
            if missing:
                raise ImageError(f"image '{name}': input file missing: {', '.join(map(str, missing))}")
            keys[name] = _digest([IMAGES / r.script, *COMMON_INPUTS, *r.inputs],
                                 [key(n) for n in r.needs] + [fact() for fact in r.facts])
        return keys[name]

    for name in table:
        key(name)
    return keys


def image_dir(name, key):
    return CACHE / f"{name}-{key}"


@dataclass
class Images:
    """Where the built images are, and what went into them."""
    dirs: dict

    @property
    def xen(self):
        return next(d for n, d in self.dirs.items() if n.startswith("xen-")) / "xen"

    @property
    def kernel(self):
        return self.dirs["kernel"] / "vmlinuz"

    @property
    def guest_initrd(self):
        return self.dirs["guest-initramfs"] / "guest-initrd.cpio.gz"

    @property
    def vcpu_plugin(self):
        return self.dirs["vcpu-plugin"] / "vcpucount.so" if "vcpu-plugin" in self.dirs else None

    @property
    def xen_syms(self):
        return self.xen.with_name("xen-syms")

    @property
    def dom0_rootfs(self):
        found = sorted(self.dirs["dom0-rootfs"].glob("dom0-rootfs.cpio*"))
        if not found:
            raise ImageError(f"no dom0-rootfs.cpio* in {self.dirs['dom0-rootfs']}")
        return found[0]

    def versions(self):
        """name -> the recipe's versions.txt lines (package versions and hashes)."""
        out = {}
        for name, d in self.dirs.items():
            vfile = d / "versions.txt"
            out[name] = {"dir": str(d), "versions": vfile.read_text().splitlines() if vfile.exists() else []}
        return out


def ensure(variant="stock", progress=None, only=None):
    """Build every missing image (in dependency order); return an Images."""
    table = recipes(variant)
    keys = cache_keys(variant)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs never build into one cache at once
        for name in table:
            if only and name not in only:
                continue
            target = image_dir(name, keys[name])
            if target.exists():
                _say(progress, f"image {name}: cached ({target.name})")
                continue
            args = [str(image_dir(n, keys[n])) for n in table[name].needs]
            _build(table[name], target, args, progress)
    return Images({n: image_dir(n, keys[n]) for n in table if not only or n in only})


def _say(progress, text):
    if progress:
        progress(text)


def _last_log_lines(recipe):
    """Lines of the newest build.log of this recipe in the cache (None if it was never built)."""
    logs = sorted(CACHE.glob(f"{recipe.name}-*/build.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    with open(logs[-1], errors="replace") as f:
        return sum(1 for _ in f)


def _build(recipe, target, args, progress):
    """Run one recipe into a temporary folder, then move it into place."""
    tmp = target.with_name(target.name + ".partial")
    log_path = target.with_name(target.name + ".log")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    env = dict(os.environ, **recipe.env)
    cmd = ["bash", str(IMAGES / recipe.script), str(tmp), *args]
    _say(progress, f"image {recipe.name}: building ({' '.join(cmd[1:])})")
    started = time.monotonic()
    tail = deque(maxlen=40)
    # The bar's total is the line count of this recipe's last build log (any key): an ETA from it.
    with open(log_path, "w") as log, progress_bars.task(f"image {recipe.name}", _last_log_lines(recipe)) as advance:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=str(ROOT), errors="replace")
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                advance()
                if line.startswith("["):
                    _say(progress, f"image {recipe.name}: {line.strip()}")
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0 or not tmp.exists():
        raise ImageError(f"image '{recipe.name}' failed (recipe {recipe.script}, exit {rc}); last lines:\n    "
                         + "\n    ".join(tail), log_path)
    os.replace(tmp, target)
    os.replace(log_path, target / "build.log")
    _say(progress, f"image {recipe.name}: built in {time.monotonic() - started:.0f} s")
