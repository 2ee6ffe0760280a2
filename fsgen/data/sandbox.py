"""Run untrusted Python (generated MBPP code) in a separate, limited process.

Each program runs in a fresh `python -I` process whose working directory is a new temporary
directory, with

- a wall-clock time limit: on expiry the whole process group is killed;
- resource limits the child sets on itself before the code runs: address space (memory), CPU
  seconds, file size and number of processes;
- a stripped environment (no proxies, `no_proxy=*`, one BLAS thread) and no standard input;
- networking blocked on a best-effort basis: `socket.socket`, `socket.create_connection` and
  friends are replaced by functions that raise. Code that reaches for the C module `_socket`
  directly still gets through; this is a guard against accidents, not a security boundary.

The limits are set by a small runner inside the child rather than in `preexec_fn`, which is not
safe when several programs are started from threads (`run_many`). The code never runs inside the
calling process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "memory")
_MEMORY_EXIT = 86  # the runner's exit status for a MemoryError
_FILE_LIMIT = 16 * 1024**2  # bytes any one file (stdout and stderr included) may reach
_PROCESS_LIMIT = 64  # RLIMIT_NPROC (not enforced for root)
_TAIL = 2000  # characters of stderr kept in a result

# Runs in the child: argv = [-c, program file, memory bytes, cpu seconds, file bytes, processes].
_RUNNER = f"""
import os, resource, socket, sys

path, (memory, cpu, fsize, nproc) = sys.argv[1], map(int, sys.argv[2:])
for limit, soft, hard in ((resource.RLIMIT_AS, memory, memory), (resource.RLIMIT_CPU, cpu, cpu + 1),
                          (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, nproc, nproc)):
    resource.setrlimit(limit, (soft, hard))

def _no_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the fsgen sandbox")

class _NoSocket:
    def __new__(cls, *args, **kwargs):
        _no_network()

socket.socket = socket.SocketType = _NoSocket
for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
             "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(socket, name, _no_network)

_oom = b"MemoryError: the sandbox's memory limit was reached\\n"
try:
    with open(path) as handle:
        code = compile(handle.read(), path, "exec")
    sys.argv = [path]
    exec(code, {{"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}})
except MemoryError:
    os.write(2, _oom)
    os._exit({_MEMORY_EXIT})
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
sys.stdout.flush()
os._exit(0)
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a program ended: `status` is passed, failed, timeout or memory."""

    status: str
    returncode: int | None
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _environment(home: str) -> dict[str, str]:
    """A minimal environment: no proxies, no Python variables, one thread for numeric libraries."""
    env = {"PATH": os.defpath, "HOME": home, "LANG": "C.UTF-8", "no_proxy": "*", "NO_PROXY": "*"}
    env.update(
        {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    )
    return env


def _status(returncode: int, stderr: str) -> str:
    """Map an exit status (negative: killed by that signal) and the stderr tail to a status."""
    if returncode == 0:
        return "passed"
    if returncode == _MEMORY_EXIT or stderr.rstrip().endswith("MemoryError"):
        return "memory"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the CPU-time limit
        return "timeout"
    return "failed"


def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Run `code` in a separate, limited Python process (see the module docstring).

    Passed means the program ran to its end; an exception (a failed assert included) or
    `sys.exit` is failed; running past `timeout` seconds of wall clock or CPU time is timeout;
    a MemoryError or a kill for memory is memory.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be >= 64 (Python itself needs that), got {memory_mb!r}")
    with tempfile.TemporaryDirectory(prefix="fsgen-sandbox-") as work:
        program = Path(work) / "main.py"
        program.write_text(code)
        limits = [memory_mb * 1024**2, int(timeout) + 1, _FILE_LIMIT, _PROCESS_LIMIT]
        command = [sys.executable, "-I", "-c", _RUNNER, str(program), *map(str, limits)]
        with open(Path(work) / "stderr", "w+b") as err:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=_environment(work),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own process group, so a kill reaches every child
            )
            try:
                finished = _wait_unreaped(proc.pid, timeout)
            finally:
                returncode = _kill_group(proc)  # on a timeout, and children a program left
            stderr = _tail(err)
    if not finished:
        return SandboxResult("timeout", None, stderr)
    return SandboxResult(_status(returncode, stderr), returncode, stderr)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end, leaving it unreaped (a zombie keeps its
    process-group id from being reused); True if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def _kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL the process group that `proc` leads, then reap `proc`; its exit status."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()


def _tail(handle) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - 4 * _TAIL))
    return handle.read().decode(errors="replace")[-_TAIL:]


def run_many(
    codes: list[str], *, workers: int = 2, timeout: float = 5.0, memory_mb: int = 512
) -> list[SandboxResult]:
    """`run_python` over `codes`, `workers` processes at a time; results in the order given."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda code: run_python(code, timeout=timeout, memory_mb=memory_mb), codes)
        )
