"""An analysis in a process of its own (:mod:`ldminv_app.subprocess_job`), as the first start runs
its preview and the demo: progress read from run.json as the stages move, the run folder
returned, a failure quoted with the process's last lines, a stop that ends the process; and the
job around it never imports torch into the server's process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from ldminv_app.jobs import AnalysisJob
from ldminv_app.subprocess_job import AnalysisProcessError, ProcessCancelled, run_module

#: A stand-in analysis: writes run.json as the run writer does (stage flags, counters), stage by
#: stage, 4 samples per stage in two batches; "fail" exits 3 after printing a line; "hang" waits.
FAKE = textwrap.dedent('''
    import json, os, sys, time
    out = sys.argv[-1]
    mode = sys.argv[1] if len(sys.argv) > 2 else "ok"
    if mode == "fail":
        print("error: the folder of members is empty", file=sys.stderr)
        sys.exit(3)
    if mode == "nice":
        open(out + ".nice", "w").write(str(os.nice(0)))
        sys.exit(0)
    if mode == "hang":
        open(out + ".started", "w").close()
        time.sleep(600)
    os.makedirs(out, exist_ok=True)
    stages = {"encode": False, "sima": False}
    progress = {}
    def write():
        tmp = os.path.join(out, "run.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"stages": stages, "progress": progress, "n_members": 2, "n_heldout": 2}, f)
        os.replace(tmp, os.path.join(out, "run.json"))
    for stage in stages:
        for done in (2, 4):
            progress[stage] = done
            write()
            time.sleep(0.3)
        stages[stage] = True
        write()
''')


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    (tmp_path / "fake_analysis.py").write_text(FAKE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "fake_analysis"


def test_progress_follows_run_json_and_the_folder_is_returned(fake_module, tmp_path):
    seen = []
    out = run_module(fake_module, tmp_path / "run", progress=lambda *a: seen.append(a))
    assert out == tmp_path / "run"
    assert ("encode", 2.0, 4) in seen and ("encode", 4.0, 4) in seen
    assert ("sima", 2.0, 4) in seen and ("sima", 4.0, 4) in seen
    assert seen.index(("encode", 4.0, 4)) < seen.index(("sima", 2.0, 4))
    assert (tmp_path / "run.log").is_file()


def test_a_failing_process_is_an_error_quoting_its_output(fake_module, tmp_path):
    with pytest.raises(AnalysisProcessError) as err:
        run_module(fake_module, tmp_path / "run", args=("fail",))
    text = str(err.value)
    assert "exited with status 3" in text and "the folder of members is empty" in text
    assert str(tmp_path / "run.log") in text


def test_background_work_runs_at_a_lower_priority(fake_module, tmp_path):
    import os

    run_module(fake_module, tmp_path / "run", args=("nice",), niceness=5)
    assert int((tmp_path / "run.nice").read_text()) == os.nice(0) + 5


def test_a_stop_ends_the_process(fake_module, tmp_path):
    out = tmp_path / "run"
    started = tmp_path / "run.started"
    t0 = time.monotonic()
    with pytest.raises(ProcessCancelled):
        run_module(fake_module, out, args=("hang",), should_stop=started.exists)
    assert time.monotonic() - t0 < 60  # ended, not waited for (the stand-in sleeps 600 s)


def test_the_job_reports_the_process_and_never_imports_torch_here(tmp_path):
    """In a fresh interpreter: a job running the stand-in ends "done" with its progress, and torch
    was never imported into that (server) process."""
    (tmp_path / "fake_analysis.py").write_text(FAKE)
    code = textwrap.dedent(f'''
        import sys, json
        from ldminv_app.jobs import AnalysisJob
        from ldminv_app.subprocess_job import run_module, ProcessCancelled
        class Config: out = {str(tmp_path / "run")!r}; attacks = ("sima",)
        def target(config, *, progress, should_stop):
            return run_module("fake_analysis", config.out, progress=progress, should_stop=should_stop)
        job = AnalysisJob(label="x", config=Config(), target=target, cancelled_exc=ProcessCancelled,
                          set_threads=False).start()
        job.wait(120)
        s = job.state()
        print(json.dumps({{"status": s.status, "stage": s.stage, "done": s.done, "torch": "torch" in sys.modules}}))
    ''')
    env = {"PYTHONPATH": f"{tmp_path}:{sys.path[0] if sys.path[0] else '.'}"}
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"status": "done", "stage": "sima", "done": 4.0, "torch": False}
