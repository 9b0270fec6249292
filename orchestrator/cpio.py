"""A tiny writer of `newc` cpio archives, for dom0's per-run overlay.

Linux unpacks concatenated cpio archives into one rootfs, so the run's own
files (rendered /init, xl configs, guest kernel and initrd) ride after the
cached dom0 rootfs without rebuilding it, and without needing root to set
ownership (every entry is written as root:root here).
"""

import io
from pathlib import PurePosixPath

TRAILER = "TRAILER!!!"


def _header(ino, mode, size, name, nlink=1):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return ("070701" + "".join(f"{v:08x}" for v in fields)).encode()


def _pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def build(entries):
    """entries: {path inside the archive: bytes (a file) | None (a directory)}, plus
    mode overrides as (bytes, mode) tuples. Parent directories are added as needed."""
    out = io.BytesIO()
    seen = set()
    ino = 1

    def add(name, data, mode):
        nonlocal ino
        head = _header(ino, mode, len(data), name)
        out.write(head + name.encode() + b"\0" + _pad(len(head) + len(name) + 1))
        out.write(data + _pad(len(data)))
        ino += 1

    for path in sorted(entries):
        rel = str(PurePosixPath(path)).lstrip("/")
        parts = PurePosixPath(rel).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                add(parent, b"", 0o040755)
        value = entries[path]
        if value is None:
            if rel not in seen:
                seen.add(rel)
                add(rel, b"", 0o040755)
            continue
        data, mode = value if isinstance(value, tuple) else (value, 0o644)
        add(rel, data, 0o100000 | mode)
        seen.add(rel)
    add(TRAILER, b"", 0)
    data = out.getvalue()
    return data + b"\0" * ((512 - len(data) % 512) % 512)


def read(data):
    """Parse a newc archive back into {name: (mode, bytes)} (used by tests)."""
    pos, files = 0, {}
    while True:
        head = data[pos:pos + 110]
        if head[:6] != b"070701":
            raise ValueError(f"bad cpio magic at offset {pos}")
        fields = [int(head[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += (4 - pos % 4) % 4
        if name == TRAILER:
            return files
        files[name] = (mode, data[pos:pos + size])
        pos += size
        pos += (4 - pos % 4) % 4
