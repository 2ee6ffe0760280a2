import os
import socket
import time
from pathlib import Path

import pytest

from fsgen.data import sandbox
from fsgen.data.sandbox import containment, run_many, run_python
from tests.conftest import REPO


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


def _running(tag: str) -> list[int]:
    """Processes of this machine (any namespace) whose command line holds `tag`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and tag in (entry / "cmdline").read_bytes().decode():
                if "State:\tZ" not in (entry / "status").read_text():
                    found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("setsid", [False, True], ids=["child", "setsid-grandchild"])
@pytest.mark.parametrize("ending", ["timeout", "exit"])
@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "subreaper-only"])
def test_the_process_tree_is_killed_with_the_program(setsid, ending, namespaces, monkeypatch):
    if namespaces and not containment():
        pytest.skip("this machine cannot make user namespaces")
    monkeypatch.setattr(sandbox, "containment", lambda: namespaces)
    tag = f"{60 + os.getpid() % 1000 + setsid / 10 + (ending == 'exit') / 100 + namespaces / 1000:.4f}"
    spawn = "os.setsid(); " if setsid else ""
    code = (
        "import os, subprocess, time\n"
        "if os.fork() == 0:\n"
        f"    {spawn}subprocess.Popen(['sleep', '{tag}']); os._exit(0)\n"
        "time.sleep(0.5)\n" + ("time.sleep(60)\n" if ending == "timeout" else "")
    )
    result = run_python(code, timeout=2.0)
    assert result.status == ("timeout" if ending == "timeout" else "passed"), result
    for _ in range(100):  # the kernel takes a moment to tear a namespace down
        if not _running(tag):
            break
        time.sleep(0.02)
    assert not _running(tag)


def test_an_exit_before_the_asserts_fails():
    for exit in ("os._exit(0)", "os.kill(os.getpid(), 9)", "sys.stdout.flush(); os._exit(0)"):
        code = f"import os, sys\nprint('ok')\n{exit}\nassert False\n"
        result = run_python(code)
        assert result.status != "passed", (exit, result)


needs_namespaces = pytest.mark.skipif(
    not containment(),
    reason="this machine cannot make user namespaces (no unshare, or forbidden): the sandbox "
    "then blocks only socket's Python functions, and neither files nor /proc",
)


@needs_namespaces
def test_no_network_by_any_route():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        for code in (
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",
            f"import importlib, socket\nimportlib.reload(socket)\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2)",
            f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import socket; "
            f'socket.create_connection(("127.0.0.1", {port}), timeout=2)\'], check=True)',
        ):
            result = run_python(code)
            assert result.status == "failed", (code, result)
    finally:
        server.close()


@needs_namespaces
def test_files_outside_the_temporary_folder_are_out_of_reach(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the lead's notes")
    target = tmp_path / "written.txt"
    for code in (
        f"print(open({str(secret)!r}).read())",
        f"open({str(target)!r}, 'w').write('x')",
        f"open({str(REPO / 'pyproject.toml')!r}, 'a').write('x')",
        "open('/etc/fsgen-was-here', 'w').write('x')",
    ):
        assert run_python(code).status == "failed", code
    assert not target.exists() and not Path("/etc/fsgen-was-here").exists()
    assert run_python(
        "open('scratch', 'w').write('x')\nassert open('scratch').read() == 'x'"
    ).passed


@needs_namespaces
def test_the_parents_environment_is_out_of_reach(monkeypatch):
    monkeypatch.setenv("FSGEN_SECRET_TOKEN", "s3cr3t-value")
    code = (
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        assert b's3cr3t-value' not in open(f'/proc/{pid}/environ', 'rb').read()\n"
        "    except OSError:\n"
        "        pass\n"
        "assert os.getppid() == 0 or b's3cr3t' not in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
    )
    assert run_python(code).passed


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
    if containment():  # the temporary folder, seen at a fixed place in the namespace
        assert work == Path("/tmp/sandbox")
    else:
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
