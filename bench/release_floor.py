"""The kernel's share of releasing 4 KB files, nothing else: what no daemon can do without.

    .venv/bin/python bench/release_floor.py [--files 3000] [--after-delete 0] [--dir DIR]

Per file, in one Python loop: the writer's create/write/close in an inbox (timed apart), then what a
release does with it: open and read it, write a copy (mode and times set), rename the original out
to a hold name, rename the copy into the release folder, unlink the hold; one syncfs per 32 files
after the copies, after the renames and after the unlinks, as the daemon's batches do.
`--after-delete N` first creates and deletes N files on the same file system: with online `discard`,
their trims land in the timed part (as the previous benchmark run's clean-up does).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import resource
import tempfile
import time
from pathlib import Path

BODY = (b"lorem ipsum dolor sit amet " * 200)[:4096]
_syncfs = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).syncfs


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--after-delete", type=int, default=0)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dw-floor-", dir=args.dir) as tmp:
        root = Path(tmp)
        if args.after_delete:
            junk = root / "junk"
            junk.mkdir()
            for index in range(args.after_delete):
                (junk / f"j{index}").write_bytes(BODY)
            os.sync()
            for index in range(args.after_delete):
                (junk / f"j{index}").unlink()
        fds = {}
        for name in ("inbox", "store", "out"):
            (root / name).mkdir()
            fds[name] = os.open(root / name, os.O_RDONLY | os.O_DIRECTORY)
        inbox, store, out = fds["inbox"], fds["store"], fds["out"]
        names = [f"f{index:06d}.txt" for index in range(args.files)]
        (u0, s0), t0 = cpu(), time.perf_counter()
        for name in names:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=inbox)
            os.write(fd, BODY)
            os.close(fd)
        (u1, s1), t1 = cpu(), time.perf_counter()
        for low in range(0, len(names), 32):
            batch = names[low : low + 32]
            for name in batch:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=inbox)
                st, data = os.fstat(fd), os.read(fd, 1 << 20)
                os.close(fd)
                copy = os.open(name + ".copy", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=store)
                os.write(copy, data)
                os.fchmod(copy, 0o644)
                os.utime(copy, ns=(st.st_mtime_ns, st.st_mtime_ns))
                os.close(copy)
            _syncfs(store)
            for name in batch:
                os.rename(name, name + ".hold", src_dir_fd=inbox, dst_dir_fd=store)
                os.stat(name + ".hold", dir_fd=store, follow_symlinks=False)
                os.rename(name + ".copy", name, src_dir_fd=store, dst_dir_fd=out)
            _syncfs(store)
            for name in batch:
                os.unlink(name + ".hold", dir_fd=store)
            _syncfs(store)
        (u2, s2), t2 = cpu(), time.perf_counter()
        for fd in fds.values():
            os.close(fd)
    count = len(names)
    written_cpu = (u1 - u0 + s1 - s0) / count * 1e3
    print(f"writing in place: {count / (t1 - t0):,.0f} files/s, {written_cpu:.3f} ms CPU/file")
    print(
        f"releasing: {count / (t2 - t1):,.0f} files/s, user {(u2 - u1) / count * 1e3:.3f} ms/file,"
        f" system {(s2 - s1) / count * 1e3:.3f} ms/file"
    )


if __name__ == "__main__":
    main()
