import os
import time
from pathlib import Path

import pytest

from fsgen.data.sandbox import run_many, run_python


def test_passing_and_failing_asserts():
    assert run_python("def f(x):\n    return x + 1\nassert f(1) == 2").status == "passed"
    failed = run_python("def f(x):\n    return x + 1\nassert f(1) == 3")
    assert failed.status == "failed" and not failed.passed
    assert "AssertionError" in failed.stderr_tail
    assert run_python("def f(:\n    pass").status == "failed"  # syntax error
    assert run_python("import sys\nsys.exit(0)").status == "failed"  # asserts never reached


def test_infinite_loop_is_stopped_and_the_test_process_carries_on():
    start = time.monotonic()
    result = run_python("while True:\n    pass", timeout=1.0)
    assert result.status == "timeout" and result.returncode is None
    assert time.monotonic() - start < 5
    assert run_python("assert True").passed  # this process is unharmed and can run more


def test_child_processes_are_killed_with_the_program():
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, file=sys.stderr, flush=True)\n"
        "time.sleep(60)\n"
    )
    result = run_python(code, timeout=1.0)
    assert result.status == "timeout"
    pid = int(result.stderr_tail.split()[0])
    for _ in range(100):  # the orphan is reaped by init shortly after the kill
        if not _alive(pid):
            break
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(4 * 1024**3)",
        "x = []\nwhile True:\n    x.append(bytearray(10**6))",
    ],
    ids=["one-big-allocation", "growing-list"],
)
def test_memory_hog_is_stopped(code):
    result = run_python(code, timeout=10.0, memory_mb=256)
    assert result.status == "memory" and not result.passed
    assert run_python("assert sum(range(10)) == 45").passed


def test_network_is_blocked():
    for code in (
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import socket\nsocket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)",
    ):
        result = run_python(code)
        assert result.status == "failed"
        assert "network access is disabled" in result.stderr_tail


def test_runs_in_a_fresh_temporary_directory_with_a_stripped_environment():
    code = (
        "import os, sys\n"
        "print(os.getcwd(), file=sys.stderr)\n"
        "assert os.environ['no_proxy'] == '*'\n"
        "assert 'HTTP_PROXY' not in os.environ and 'http_proxy' not in os.environ\n"
        "assert 'FSGEN_SECRET' not in os.environ\n"
        "open('scratch.txt', 'w').write('hi')\n"
        "raise ValueError('show stderr')\n"
    )
    os.environ["FSGEN_SECRET"] = "x"
    try:
        result = run_python(code)
    finally:
        del os.environ["FSGEN_SECRET"]
    assert "ValueError: show stderr" in result.stderr_tail  # every assert above held
    work = Path(result.stderr_tail.splitlines()[0])
    assert work.name.startswith("fsgen-sandbox-") and work != Path.cwd()
    assert not work.exists()  # removed afterwards


def test_run_many_keeps_order():
    results = run_many(["assert True", "assert False", "while True: pass"], timeout=1.0)
    assert [r.status for r in results] == ["passed", "failed", "timeout"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("pass", memory_mb=1)
    with pytest.raises(ValueError, match="workers"):
        run_many(["pass"], workers=0)
