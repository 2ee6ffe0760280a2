"""Run untrusted Python (generated MBPP code) in a separate, contained, limited process.

Each program runs in a fresh `python -I` process whose working directory is a new temporary
directory. What is contained (docs/sandbox.md says the same):

Always (any Linux):
- a wall-clock time limit, and resource limits the program's process sets on itself before the
  code runs: address space (memory), CPU seconds, file size and number of processes;
- the process tree: a small runner forks the program and is its reaper (a child subreaper, or
  PID 1 of a PID namespace), so children and grandchildren, even those that call `setsid`, are
  killed when the program ends or runs out of time;
- a pass is an explicit marker: the runner prints a secret token (handed over on a pipe) only
  when the program ran to its end, so `os._exit(0)` before the asserts fails;
- a stripped environment (no proxies, one BLAS thread) and no standard input; `socket`'s
  functions raise (a guard against accidents only, without namespaces).

Where unprivileged user namespaces are available (`unshare`, most Linux distributions; probed
once, and a warning says when they are not):
- a network namespace with no interface up: no network at all, whatever the code calls (`_socket`,
  a reloaded `socket`, a subprocess);
- a PID namespace with its own /proc: no other process is visible (no `/proc/<pid>/environ`);
- a mount namespace in which every mount is read-only and the folders that hold people's files
  (/home, /root, /tmp, /work, /mnt, /opt, /srv, /media, /run, /var/tmp, /dev/shm, the repository
  and the virtual environment) are covered by empty file systems; only the temporary folder is
  writable.

Not contained: the rest of the file system stays readable (/usr, /etc, /proc/sys); CPU time of
the machine is shared; a program that hunts the runner's memory for the token could fake a pass.
Without namespaces (macOS, Windows WSL1, a kernel that forbids them), the network, the file
system and other processes' /proc entries are reachable: this is then a guard, not a boundary.

The limits are set by the runner inside the child rather than in `preexec_fn`, which is not safe
when several programs are started from threads (`run_many`). The code never runs inside the
calling process.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fsgen.core.paths import repo_root

STATUSES = ("passed", "failed", "timeout", "memory")
_MEMORY_EXIT = 86  # the runner's exit status for a MemoryError
_FILE_LIMIT = 16 * 1024**2  # bytes any one file (stdout and stderr included) may reach
_PROCESS_LIMIT = 64  # RLIMIT_NPROC (not enforced for root)
_TAIL = 2000  # characters of stderr kept in a result
_HIDDEN = ("/home", "/root", "/tmp", "/work", "/mnt", "/opt", "/srv", "/media", "/run", "/var/tmp")
_HIDDEN += ("/dev/shm",)
_UNSHARE = ["--user", "--map-root-user", "--net", "--pid", "--mount-proc", "--kill-child"]

# Runs in the child: argv = [-c, contain (0/1), hidden folders (":"-joined), the Python
# installation kept visible, memory bytes, cpu seconds, file bytes, processes]; the pass token
# arrives on standard input.
_RUNNER = f"""
import ctypes, os, resource, signal, socket, sys

contain, hidden, python = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
memory, cpu, fsize, nproc = map(int, sys.argv[4:])
token = sys.stdin.buffer.read()
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
libc = ctypes.CDLL(None, use_errno=True)

def check(result, what):
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), what)

def mount(source, target, kind, flags, data=None):
    encode = lambda text: None if text is None else text.encode()
    check(libc.mount(encode(source), encode(target), encode(kind), flags, encode(data)), target)

if contain:  # we are root of fresh user, mount, PID and network namespaces
    RDONLY, NOSUID, NODEV, REMOUNT, BIND = 1, 2, 4, 32, 4096
    KEEP = 2 | 4 | 8 | 1024 | 2048 | 4096  # nosuid nodev noexec noatime nodiratime relatime
    work = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    installed = os.open(python, os.O_RDONLY | os.O_DIRECTORY)
    points = [line.split()[4] for line in open("/proc/self/mountinfo")]
    for point in points:  # every mount read-only (but /proc and /dev: the namespace's own)
        if point.startswith(("/proc", "/dev")) or not os.path.isdir(point):
            continue
        flags = REMOUNT | BIND | RDONLY | (os.statvfs(point).f_flag & KEEP)
        try:
            mount(None, point, None, flags)
        except OSError:
            if point == "/":
                raise
    for folder in filter(None, hidden.split(":")):
        mount("tmpfs", folder, "tmpfs", NOSUID | NODEV, "size=16m,mode=755")
    if not os.path.isdir(python):  # the standard library lay in a hidden folder: show it again
        os.makedirs(python)
        mount("/proc/self/fd/%d" % installed, python, None, BIND)
    os.close(installed)
    os.makedirs("/tmp/sandbox")
    mount("/proc/self/fd/%d" % work, "/tmp/sandbox", None, BIND)
    mount(None, "/tmp/sandbox", None, REMOUNT | BIND | NOSUID | NODEV)  # writable
    os.chdir("/tmp/sandbox")
    os.close(work)
    for folder in filter(None, hidden.split(":")):
        if folder != "/tmp":
            mount(None, folder, None, REMOUNT | RDONLY | NOSUID | NODEV)

libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the program come back to us

def children():
    me, found = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as handle:
                if handle.read().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(pid))
        except (OSError, IndexError):
            pass
    return found

def kill_tree():
    while True:  # kill our children; theirs come back to us (the subreaper), until none is left
        found = children()
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in found:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

def on_term(signum, frame):
    kill_tree()
    os._exit(128 + signal.SIGKILL)

program = os.fork()
if program == 0:
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
        with open("main.py") as handle:
            code = compile(handle.read(), "main.py", "exec")
        sys.argv = ["main.py"]
        exec(code, {{"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}})
        sys.stdout.flush()
    except MemoryError:
        os.write(2, _oom)
        os._exit({_MEMORY_EXIT})
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os.write(1, b"\\n" + token + b"\\n")  # the program ran to its end
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
status = os.waitpid(program, 0)[1]
kill_tree()
os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
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
    """Map an exit status (negative or 128 + n: killed by signal n) and the stderr tail to a
    status."""
    if returncode == 0:
        return "passed"
    if returncode == _MEMORY_EXIT or stderr.rstrip().endswith("MemoryError"):
        return "memory"
    killed = {signal.SIGXCPU, signal.SIGKILL}  # the CPU-time limit
    if -returncode in killed or returncode - 128 in killed:
        return "timeout"
    return "failed"


def _hidden_folders() -> list[str]:
    """The folders a contained program finds empty: where people keep files, the repository,
    the virtual environment (the Python installation inside one is shown again)."""
    candidates = [*_HIDDEN, str(repo_root()), sys.prefix, tempfile.gettempdir()]
    chosen: list[Path] = []
    for path in sorted({Path(c).resolve() for c in candidates}, key=lambda p: len(p.parts)):
        inside = any(path.is_relative_to(outer) for outer in chosen)  # covered already
        if path.parent != path and path.is_dir() and not inside:
            chosen.append(path)
    return [str(path) for path in chosen]


@functools.cache
def containment() -> bool:
    """Whether programs run in their own user, PID, mount and network namespaces (probed once:
    `unshare` present and allowed to make them); warns when they cannot."""
    reason = None
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        reason = "no `unshare` command (util-linux) on this system"
    else:
        probe = _run("pass", timeout=20.0, memory_mb=256, contain=True)
        if not probe.passed:
            reason = f"unshare failed ({probe.stderr_tail.strip()[-300:] or probe.status})"
    if reason:
        warnings.warn(
            f"the MBPP sandbox runs without namespaces: {reason}. Programs are time-, memory- "
            "and process-limited and their process tree is killed, but the network, the file "
            "system and other processes' /proc entries are reachable",
            stacklevel=2,
        )
    return reason is None


def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Run `code` in a separate, contained, limited Python process (see the module docstring).

    Passed means the program ran to its end (the runner's marker came after it); an exception
    (a failed assert included), `sys.exit` or `os._exit` is failed; running past `timeout`
    seconds of wall clock or CPU time is timeout; a MemoryError or a kill for memory is memory.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64:
        raise ValueError(
            f"memory_mb must be an integer >= 64 (Python needs that), got {memory_mb!r}"
        )
    if not isinstance(code, str):
        raise ValueError(f"code must be a string of Python, got {type(code).__name__}")
    return _run(code, timeout=timeout, memory_mb=memory_mb, contain=containment())


def _run(code: str, *, timeout: float, memory_mb: int, contain: bool) -> SandboxResult:
    with tempfile.TemporaryDirectory(prefix="fsgen-sandbox-") as work:
        (Path(work) / "main.py").write_text(code)
        token = secrets.token_hex(16)
        limits = [memory_mb * 1024**2, int(timeout) + 1, _FILE_LIMIT, _PROCESS_LIMIT]
        hidden = ":".join(_hidden_folders()) if contain else ""
        python = str(Path(sys.base_prefix).resolve())
        command = [sys.executable, "-I", "-c", _RUNNER, str(int(contain)), hidden, python]
        command += map(str, limits)
        if contain:
            command = [shutil.which("unshare") or "unshare", *_UNSHARE, *command]
        with open(Path(work) / "stdout", "w+b") as out, open(Path(work) / "stderr", "w+b") as err:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=_environment(work),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, so a kill reaches every child
            )
            try:
                proc.stdin.write(token.encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                finished = _wait_unreaped(proc.pid, timeout)
            finally:
                returncode = _end(proc)  # on a timeout, and anything a program left
            stderr, stdout = _tail(err), _tail(out)
    if not finished:
        return SandboxResult("timeout", None, stderr)
    status = _status(returncode, stderr)
    if status == "passed" and stdout.rstrip("\n").rsplit("\n", 1)[-1] != token:
        status = "failed"  # it exited 0 without running to its end (os._exit before the asserts)
        stderr += "\nthe program exited before its end (no completion marker)"
    return SandboxResult(status, returncode, stderr)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to end, leaving it unreaped (a zombie keeps its
    process-group id from being reused); True if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.005)
    return False


def _end(proc: subprocess.Popen) -> int:
    """End what is left of a run and reap `proc`; its exit status. The runner (or, contained, the
    namespace's PID 1) kills the program's whole tree on SIGTERM; SIGKILL of the process group
    follows for anything left."""
    if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        proc.send_signal(signal.SIGTERM)
        _wait_unreaped(proc.pid, 1.0)
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
