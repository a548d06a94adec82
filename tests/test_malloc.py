"""The allocator setting made at import (bayesmri/_malloc.py): on by default on glibc, off on request."""
import os
import subprocess
import sys

import pytest

CODE = "import bayesmri, bayesmri._malloc as m; print(m._done)"


def _run(env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_import_retains_freed_memory_unless_opted_out():
    assert _run({}) == "True"
    assert _run({"BAYESMRI_MALLOC": "system"}) == "False"


def test_retain_freed_memory_is_idempotent():
    from bayesmri._malloc import retain_freed_memory

    assert retain_freed_memory() == retain_freed_memory()
