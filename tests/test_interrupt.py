"""``bayesmri._interrupt`` and the commit of ``bayesmri.io.atomic_dir`` under signals (in-process)."""
import os
import signal
import time

import pytest

from bayesmri import _interrupt, io


def test_signal_inside_deferred_block_is_raised_after_it_completes():
    done = []
    with _interrupt.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt) as e:
            with _interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: it only recorded the signal
                done.append(True)
        assert done == [True]
        assert isinstance(e.value, _interrupt.Interrupted) and e.value.exit_code == 143
        assert getattr(e.value, "deferred", False)
        assert _interrupt.pending() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    assert _interrupt.pending() is None  # and forgotten: a later library call in this process runs
    _interrupt.raise_if_pending()


def test_signal_during_commit_of_atomic_dir_still_commits_every_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_replace = os.replace
    calls = []

    def replace_and_signal(src, dst):  # SIGINT arrives between the first and the second rename
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return real_replace(src, dst)

    with _interrupt.signals_as_interrupt():
        with pytest.raises(KeyboardInterrupt) as e:
            with io.atomic_dir(out) as stage:
                for name in ("a.txt", "b.txt", "c.txt"):
                    (stage / name).write_text(name)
                monkeypatch.setattr(os, "replace", replace_and_signal)
        monkeypatch.setattr(os, "replace", real_replace)
    assert getattr(e.value, "deferred", False)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "c.txt"]  # all or nothing: all
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_interrupt_before_commit_leaves_the_folder_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_dir(out, replace=["old.txt"]) as stage:
            (stage / "new.txt").write_text("new")
            raise _interrupt.Interrupted(signal.SIGINT)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


def test_stale_temporaries_only_of_dead_processes_or_old_legacy(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        f".x.npz.{dead.pid}-abc.tmp.npz": False,  # dead writer: removed
        f".x.npz.{os.getpid()}-abc.tmp.npz": True,  # live writer: kept
        ".x.npz.legacy1.tmp.npz": True,  # no pid, recent: kept
        ".x.npz.legacy2.tmp.npz": False,  # no pid, two hours old: removed
        f".y.npz.{dead.pid}-abc.tmp.npz": True,  # another name: not ours
        "x.npz": True,
    }
    for n in names:
        (tmp_path / n).write_text("")
    old = time.time() - 7200
    os.utime(tmp_path / ".x.npz.legacy2.tmp.npz", (old, old))
    io.remove_stale_temporaries(tmp_path, "x.npz")
    assert {n: (tmp_path / n).exists() for n in names} == names


def test_check_writable_refuses_a_file_in_the_path_and_too_little_space(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        io.check_writable(tmp_path / "f" / "out")
    with pytest.raises(OSError, match="not enough free space"):
        io.check_writable(tmp_path / "out", need_bytes=1 << 62)
    assert io.check_writable(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new").iterdir()) == []  # the probe file is gone


def _commit_and_die(out):
    # child process: commit three files and die (like SIGKILL) right after the first rename
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("a.txt"):
            os._exit(9)

    os.replace = replace
    with io.atomic_dir(out, replace=["old.txt"]) as stage:
        for name in ("a.txt", "b.txt", "c.txt"):
            (stage / name).write_text("new " + name)


def test_commit_killed_half_way_is_finished_by_the_next_run(tmp_path):
    import multiprocessing as mp

    out = tmp_path / "out"
    out.mkdir()
    for name in ("b.txt", "old.txt"):
        (out / name).write_text("old " + name)
    p = mp.get_context("fork").Process(target=_commit_and_die, args=(out,))
    p.start()
    p.join(60)
    assert p.exitcode == 9
    # the kill left a mix (new a, old b, no c) and the journal; no reader should trust it as final
    assert (out / "a.txt").read_text() == "new a.txt" and (out / "b.txt").read_text() == "old b.txt"
    assert (out / io.COMMIT_JOURNAL).exists()
    with io.atomic_dir(out) as stage:  # any later run into the folder
        (stage / "z.txt").write_text("z")
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "a.txt": "new a.txt", "b.txt": "new b.txt", "c.txt": "new c.txt", "z.txt": "z"}
    assert [p.name for p in tmp_path.iterdir() if p.name != "out"] == []  # the dead run's stage is gone


def test_unreadable_metrics_json_is_set_aside_not_lost(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"tv": {"gro-r4": {"psnr": 3')  # torn by an editor
    with pytest.warns(UserWarning, match="not valid JSON.*metrics.json.corrupt"):
        with io.atomic_dir(out, merge_json=["metrics.json"]) as stage:
            io.save_json(stage / "metrics.json", {"zf": {"x": 1}})
    assert io.load_json(out / "metrics.json") == {"zf": {"x": 1}}
    assert (out / "metrics.json.corrupt").read_text().startswith('{"tv"')
