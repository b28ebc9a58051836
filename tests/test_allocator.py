"""The entry points' allocator: when they re-execute, with what, and that freed memory is then reused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bisenet_jax import allocator

LIB = "/site/cmeel.prefix/lib/libmimalloc.so.3"


def test_plan_preloads_mimalloc_only_where_it_applies():
    assert allocator.planned_preload({}, LIB, "linux") == LIB
    # Other preloads of the user are kept, after it.
    assert allocator.planned_preload({"LD_PRELOAD": "/x/libfoo.so"}, LIB, "linux") == f"{LIB} /x/libfoo.so"
    assert allocator.planned_preload({}, None, "linux") is None  # the wheel is not installed
    assert allocator.planned_preload({}, LIB, "darwin") is None
    assert allocator.planned_preload({}, LIB, "win32") is None


def test_a_users_allocator_and_the_opt_out_win():
    for preload in ("/usr/lib/libjemalloc.so.2", "/a/libtcmalloc_minimal.so.4:/b/libx.so", LIB):
        assert allocator.planned_preload({"LD_PRELOAD": preload}, LIB, "linux") is None, preload
    for value in ("system", "0", "off", "SYSTEM"):
        assert allocator.planned_preload({allocator.OPT_OUT: value}, LIB, "linux") is None
    assert allocator.planned_preload({allocator.OPT_OUT: "mimalloc"}, LIB, "linux") == LIB


def test_loaded_allocator_reads_the_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
                    "7f02-7f03 r-xp 00000000 08:01 2 /site/cmeel.prefix/lib/libmimalloc.so.3\n"
                    "7f04-7f05 rw-p 00000000 00:00 0 \n")
    assert allocator.loaded_allocator(str(maps)) == "libmimalloc.so.3"
    maps.write_text("7f00-7f01 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.loaded_allocator(str(maps)) == ""
    assert allocator.loaded_allocator(str(tmp_path / "missing")) == ""


def test_describe_says_which_and_why():
    assert allocator.describe({}, "libmimalloc.so.3").startswith("memory allocator: libmimalloc.so.3 (LD_PRELOAD")
    assert allocator.describe({allocator.OPT_OUT: "system"}, "") == "memory allocator: the C library's (BISENET_MALLOC=system)"


# A child that calls enable() the way the entry points do, then reports what it runs with and the
# page faults of touching a freed 256 MiB malloc block again.
CHILD = textwrap.dedent("""
    import ctypes, json, os, resource, sys, time
    print("before", flush=True)  # output before the re-execution is neither lost nor garbled
    from bisenet_jax import allocator
    allocator.enable()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 256 << 20
    def touch_and_free():
        block = libc.malloc(ctypes.c_size_t(size))
        ctypes.memset(block, 1, size)
        libc.free(block)
    touch_and_free()
    time.sleep(0.1)  # a pause, as between two train steps
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    touch_and_free()
    print(json.dumps({"argv": sys.argv[1:], "loaded": allocator.loaded_allocator(), "pid": os.getpid(),
                      "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                      "purge_delay": os.environ.get("MIMALLOC_PURGE_DELAY"),
                      "describe": allocator.describe()}))
""")


def _run_child(tmp_path, env_updates):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.OPT_OUT)}
    env.update(env_updates)
    out = subprocess.run([sys.executable, str(script), "--flag", "a b"], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    return lines, json.loads(lines[-1])


@pytest.mark.skipif(allocator.planned_preload({}, allocator.mimalloc_path()) is None,
                    reason="mimalloc is preloaded on Linux with the cmeel-mimalloc wheel only; not here")
def test_enable_reexecutes_once_with_mimalloc_which_reuses_freed_memory(tmp_path):
    lines, on = _run_child(tmp_path, {})
    # Same arguments, mimalloc mapped, one re-execution (the first line printed once per image).
    assert on["argv"] == ["--flag", "a b"] and on["loaded"] == "libmimalloc.so.3", on
    assert lines[:-1] == ["before", "before"] and on["purge_delay"] == "-1"
    assert on["describe"].startswith("memory allocator: libmimalloc.so.3")
    _, off = _run_child(tmp_path, {allocator.OPT_OUT: "system"})
    assert off["loaded"] == "" and "BISENET_MALLOC=system" in off["describe"]
    # glibc maps a 256 MiB block afresh (65,536 4 KiB pages faulted and zeroed again); mimalloc reuses it.
    assert off["faults"] > 60_000, off
    assert on["faults"] < 1_000, on
    # A user's own purge delay is kept. (Its effect shows in the real loop, not in this child: mimalloc
    # purges lazily; docs/profile.md has the loop figures with and without it.)
    _, users = _run_child(tmp_path, {"MIMALLOC_PURGE_DELAY": "10"})
    assert users["purge_delay"] == "10" and users["loaded"] == "libmimalloc.so.3", users
