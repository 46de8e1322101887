"""A fork server for running the real ``layercrit`` CLI many times quickly (tests/test_hostile.py).

Starting Python and importing PyTorch costs 4-6 s of CPU per command, which would make a matrix of
dozens of commands take many minutes. This server imports layercrit's CLI once (importing only:
no PyTorch operation runs here, so no thread pool exists to be broken by fork), then for each
request forks a child that runs ``layercrit.cli.main(argv)`` exactly as ``python -m layercrit.cli``
would: its own process, working directory, environment, stdout/stderr files and exit status; an
exception that escapes ``main`` prints its traceback and exits 1, as the interpreter does. A child
still running after the request's timeout is killed and reported as such.

Protocol: one JSON object per line on stdin ({"argv", "cwd", "env", "stdout", "stderr", "timeout",
optionally "userns": true to run the child in a user namespace where permission bits apply}), one
JSON reply per line on the original stdout ({"returncode", "timed_out"}).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


USERNS_UNAVAILABLE = 97  # exit status of a child that was asked for a user namespace and could not get one


def _enter_user_namespace() -> bool:
    """Become root of a new user namespace that maps only uid/gid 0: files owned by other users are then
    subject to their permission bits (as for an unprivileged user), while root's own files stay usable."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()  # before: inside, the outer ids read as the overflow id
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        return False
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    except OSError:
        return False
    return True


def _child(request: dict) -> None:
    code = 1
    if request.get("userns") and not _enter_user_namespace():
        os._exit(USERNS_UNAVAILABLE)
    try:
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["layercrit", *request["argv"]]
        from layercrit.cli import main

        try:
            code = main(list(request["argv"]))
        except SystemExit as e:  # argparse: usage errors (2), --help (0)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
    except BaseException:  # what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.01)


def serve() -> None:
    reply_fd = os.dup(1)  # replies go here; children get their own stdout
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    import layercrit.cli

    layercrit.cli.build_parser()  # imports every command module (and PyTorch) once, here
    import layercrit.analysis  # noqa: F401  (pandas, scipy)
    import layercrit.data  # noqa: F401
    import layercrit.engine  # noqa: F401
    import layercrit.report  # noqa: F401  (matplotlib, seaborn)
    import layercrit.store  # noqa: F401

    os.write(reply_fd, b'{"ready": true}\n')
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        code, timed_out = _wait(pid, float(request["timeout"]))
        os.write(reply_fd, (json.dumps({"returncode": code, "timed_out": timed_out}) + "\n").encode())


if __name__ == "__main__":
    serve()
