"""The warm local cluster's resident driver: later amctl commands run in it, imports done and Ray joined.

`amctl cluster up` starts it beside the local Ray head.  A command sent to it runs the same Typer app, the same
lifecycle and the same exit code as a fresh process would, on the caller's own terminal (stdin, stdout and
stderr travel over a Unix socket), in the caller's folder; Ctrl-C in the caller interrupts it.  What it skips is
the interpreter, the imports and joining Ray, and a trial skips starting its Ray worker: the driver keeps idle
Ray workers of its own job prestarted with a trial's modules imported, and Ray hands a trial's actor one of them
instead of starting a process (bench/startup.py measures both).

It serves one command at a time, and only what it would run exactly as a fresh process: a command sent while
another runs, one for another cluster (`--address`), one from an environment that differs in anything amctl,
its libraries or its stores read, or from code changed since it started runs in its own process as before.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from amlab.platform.errors import AmctlError
from amlab.platform.local_cluster import PRELOADED, RECORD
from amlab.platform.settings import Settings

SERVED = {"launch", "resume", "status", "report", "compare", "list", "delete", "cancel"}  # not cluster, ui, server, jobs
# what amctl, torch, Ray, MLflow and the stores read from the environment: a command differing here runs apart
RELEVANT = ("AMCTL_", "MLFLOW_", "RAY_", "TUNE_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "NCCL_", "TORCH", "PYTORCH_",
            "PYTHON", "LD_", "XDG_", "AWS_", "GOOGLE_", "PG", "HOME", "TMPDIR", "VIRTUAL_ENV", "DO_NOT_TRACK")
KEEP_ALIVE_S = 24 * 3600  # how long Ray keeps a prestarted idle worker beyond its usual idle limit
START_TIMEOUT_S = 120.0
# what a served command imports beyond the CLI: a launch's Tune and Optuna (platform/sweep.py, 0.7 s), a sweep's report
# with its plots (0.7 s) and parameter importances (0.2 s); otherwise the first launch after `up` imports them
COMMAND_MODULES = ("amlab.platform.api", "amlab.platform.sweep", "amlab.platform.report", "matplotlib.figure",
                   "optuna.importance")
LOG = "local-driver.log"  # in AMCTL_HOME: the resident's own output, and a line per command it served
ACCEPT, DECLINE, INTERRUPT = b"A", b"D", b"I"


def code_stamp(cli: str) -> str:
    """A digest of the CLI's file and amlab's source (names, sizes, modification times): the resident serves only
    the code it loaded."""
    roots = [Path(sys.modules["amlab.platform.settings"].__file__).parent]
    roots += [Path(spec.origin).parent for name in ("amlab.workloads", "amlab.dashboards")
              if (spec := importlib.util.find_spec(name)) and spec.origin]
    files = [Path(cli).resolve()] + sorted(f for r in roots for f in r.rglob("*.py"))
    return hashlib.sha256(repr([(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files]).encode()).hexdigest()


def differs(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The variables that matter to a command and differ between two environments."""
    return sorted(k for k in a.keys() | b.keys() if k.startswith(RELEVANT) and a.get(k) != b.get(k))


def served(argv: list[str]) -> bool:
    """Whether a command line is one the resident may run: a served command that ends, on this machine's local cluster."""
    words, apart = [a for a in argv if not a.startswith("-")], ("--address", "--watch")  # another cluster; no end
    return bool(words) and words[0] in SERVED and not any(a.split("=")[0] in apart for a in argv)


# ---- the caller (amctl's entry point): stdlib only, before anything heavy is imported -------------------------------

def forward(argv: list[str], cli: str) -> int | None:
    """Run the command in the resident driver if one serves this home (`cli`: the CLI's file, whose code it must
    have loaded); its exit code, or None to run it here."""
    if os.environ.get("AMCTL_RESIDENT") == "0" or not served(argv):
        return None
    try:
        driver = json.loads((Settings.home_path() / RECORD).read_text())["driver"]
        conn = socket.socket(socket.AF_UNIX)
        conn.settimeout(30)
        conn.connect(driver["socket"])
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "code": code_stamp(cli),
                              "python": sys.executable}).encode()
        socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
        conn.sendall(request)
        if conn.recv(1) != ACCEPT:
            conn.close()
            return None
    except (OSError, ValueError, KeyError, TypeError):  # no resident, a stale record, a refused or broken connection
        return None
    conn.settimeout(None)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C here interrupts the command there
        signal.signal(sig, lambda _signum, _frame: conn.send(INTERRUPT))
    reply = b""
    while len(reply) < 4 and (chunk := conn.recv(4 - len(reply))):
        reply += chunk
    if len(reply) < 4:
        print(f"error: the local cluster's driver (pid {driver['pid']}) ended during the command; "
              f"see {Settings.home_path() / LOG}", file=sys.stderr)
        return 1
    return struct.unpack("!i", reply)[0]


# ---- `amctl cluster up` / `down` -----------------------------------------------------------------------------------

def start(settings: Settings, temp_dir: str, app: str) -> dict[str, Any]:
    """Start the resident for the local head (it joins the head recorded in AMCTL_HOME) to run `app` ("module:attr",
    the CLI's Typer app, named by the CLI: the platform never imports it); its record once it serves."""
    path = str(Path(temp_dir) / "driver.sock")
    with open(settings.home / LOG, "ab") as log:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # it joins this head, never another cluster
        proc = subprocess.Popen([sys.executable, "-m", "amlab.platform.resident", path, app], stdout=log, env=env,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + START_TIMEOUT_S
    while proc.poll() is None and not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.1)
    if not os.path.exists(path):
        stop({"pid": proc.pid})
        raise AmctlError(f"the local cluster's driver did not start; see {settings.home / LOG}")
    return {"pid": proc.pid, "socket": path}


def stop(driver: dict[str, Any]) -> None:
    """SIGTERM to the resident (a command it runs is interrupted and closed), SIGKILL if it outlives 30 s."""
    try:
        proc = psutil.Process(driver["pid"])
        if "amlab.platform.resident" in " ".join(proc.cmdline()):
            proc.terminate()
            psutil.wait_procs([proc], timeout=30)
            if proc.is_running():
                proc.kill()
    except psutil.Error:
        pass


# ---- the resident itself ---------------------------------------------------------------------------------------------

class Resident:
    def __init__(self, path: str, app: str):
        self.base = dict(os.environ)  # what it serves: this environment, as it came (imports below add to it)
        module, _, attr = app.partition(":")
        cli = importlib.import_module(module)
        self.app, self.code = getattr(cli, attr), code_stamp(cli.__file__)  # what it runs: this code
        self.path, self.jobs, self.busy = path, queue.Queue(), threading.Event()

    def join(self) -> None:
        """Join the local head as a job with no runtime env.

        Ray hands an actor a prestarted idle worker only when their runtime envs match; a prestarted worker has
        none (and a trial actor none either, platform/sweep.py).  This job needs none: the head was started from
        this environment (`cluster up`), so its workers inherit the stores from it.
        """
        from amlab.platform import local_cluster, ray_runtime

        ray_runtime.ensure_ray(Settings.load(), bare_job=True)  # joins the local head recorded in AMCTL_HOME
        self.head = local_cluster.running(Settings.load())["pid"]  # its processes' session (its workers' too)

    def prestart(self, first: bool = False) -> None:
        """Keep one idle Ray worker per CPU ready for this job's trials (the head preloads a trial's modules in each,
        local_cluster.PRELOADED): a trial's actor then starts at once instead of after a new process imports torch,
        MLflow and amctl.  Ray's own call for it (the raylet's PrestartWorkers).  The `first` time, one per CPU
        whatever is idle: workers Ray starts by itself for a first driver (only when the user set
        local_cluster.PRESTART) do not take a trial's actor, and Ray stops them once idle workers outnumber the
        CPUs (those prestarted here are kept: KEEP_ALIVE_S)."""
        import ray

        from amlab.platform import ray_runtime

        node = next(n for n in ray.nodes() if n["Alive"])
        wanted = int(node["Resources"].get("CPU", 1)) - (0 if first else len(self.idle_workers()))
        if wanted > 0:
            try:  # without them a trial starts its own worker, as a joined launch's does
                ray_runtime.prestart_workers(wanted, KEEP_ALIVE_S)
            except Exception as e:  # grpc's errors: logged, the resident keeps serving
                print(f"prestarting {wanted} Ray workers failed: {e}", flush=True)

    def idle_workers(self) -> list[psutil.Process]:
        """The head's idle Ray workers (Ray titles a worker process `ray::IDLE` between tasks)."""
        def idle(p: psutil.Process) -> bool:
            try:
                return (p.info["cmdline"] or [""])[0].strip() == "ray::IDLE" and os.getsid(p.pid) == self.head
            except OSError:  # gone since listed
                return False

        return [p for p in psutil.process_iter(["cmdline"]) if idle(p)]

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the prestarted workers have imported (their CPU time stops growing): `up` returns warm."""
        deadline, spent = time.time() + timeout, {}
        while time.time() < deadline:
            now = {}
            for p in self.idle_workers():
                try:
                    now[p.pid] = sum(p.cpu_times()[:2])
                except psutil.Error:  # gone since listed (Ray stops the workers beyond one per CPU)
                    pass
            if now and all(pid in spent and cpu - spent[pid] < 0.02 for pid, cpu in now.items()):
                return
            spent = now
            time.sleep(0.5)

    def accept(self, listener: socket.socket) -> None:
        """The acceptor thread: read each request, decline what must run apart (or arrives while busy), queue the rest."""
        while True:
            conn, _ = listener.accept()
            fds: list[int] = []
            try:
                head, fds, _, _ = socket.recv_fds(conn, 4, 3)
                size, body = struct.unpack("!I", head)[0], b""
                while len(body) < size and (chunk := conn.recv(size - len(body))):
                    body += chunk
                request = json.loads(body)
                why = self.refusal(request) or ("busy" if self.busy.is_set() else "")
                if not why:
                    conn.sendall(ACCEPT)
                    self.busy.set()  # this thread alone accepts: no second command between the check and here
                    self.jobs.put((conn, request, fds))
                    continue
                print(f"declined {request['argv'][:3]}: {why}", flush=True)
                conn.sendall(DECLINE)
            except (OSError, ValueError, KeyError, struct.error):  # a caller gone, or not amctl's request
                pass
            for fd in fds:
                os.close(fd)
            conn.close()

    def refusal(self, request: dict[str, Any]) -> str:
        """Why the request must run in its own process ("": it may run here)."""
        if not served(request["argv"]):
            return "not a served command"
        if request["code"] != self.code or request["python"] != sys.executable:
            return "other code than the resident loaded"
        if different := differs(request["env"], self.base):
            return f"environment differs in {', '.join(different)}"
        return ""

    def run(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
        """One command, as a fresh process would run it, on the caller's descriptors, folder and display variables."""
        saved, env, cwd = [os.dup(i) for i in range(3)], dict(os.environ), os.getcwd()
        running, lock = [True], threading.Lock()

        def listen() -> None:  # the caller's Ctrl-C (or its end) becomes this process's own SIGINT
            while (byte := _recv(conn)) is not None:
                if byte in (INTERRUPT, b""):
                    with lock:
                        if running[0]:
                            os.kill(os.getpid(), signal.SIGINT)
                if byte == b"":
                    return

        sys.stdout.flush(), sys.stderr.flush()
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.environ.update({k: v for k, v in request["env"].items() if not k.startswith(RELEVANT)})
        os.chdir(request["cwd"])
        threading.Thread(target=listen, daemon=True).start()
        code = 1
        try:
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                self.app(args=request["argv"], prog_name="amctl")
                code = 0
            finally:
                with lock:
                    running[0] = False
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        except SystemExit as e:  # how click ends every command
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            for i, fd in enumerate(saved):
                os.dup2(fd, i)
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
        return code

    def serve(self) -> None:
        sys.stdout.reconfigure(line_buffering=True)
        self.join()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a caller's Ctrl-C, during its command, interrupts
        signal.signal(signal.SIGTERM, _stop)  # `cluster down`: ends a command it runs as well (after Ray's own handler)
        for name in (*COMMAND_MODULES, *PRELOADED):  # the platform, and what a trial imports
            importlib.import_module(name)
        from amlab.platform import api, tracking

        api.store(), tracking.client(api.settings())  # the stores opened (created, in a fresh home) before any command
        self.prestart(first=True)
        self.settle()
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(self.path + ".new")
        os.chmod(self.path + ".new", 0o600)
        listener.listen(8)
        os.rename(self.path + ".new", self.path)  # ready: `cluster up` waits for this name
        threading.Thread(target=self.accept, args=(listener,), daemon=True).start()
        print(f"serving {self.path} (pid {os.getpid()})", flush=True)
        while True:
            conn, request, fds = self.jobs.get()
            t0 = time.perf_counter()
            code = self.run(conn, request, fds)
            print(f"served {' '.join(request['argv'])}: exit {code} in {time.perf_counter() - t0:.2f} s", flush=True)
            try:  # logged first: once the caller has its exit code, the log says what it ran
                conn.sendall(struct.pack("!i", code))
                conn.shutdown(socket.SHUT_RDWR)  # ends the command's listener thread
            except OSError:
                pass
            conn.close()
            self.busy.clear()
            self.prestart()


class Stopped(BaseException):
    """SIGTERM: not an exit code of the command it interrupts (those are caught), the resident's own end."""


def _stop(_signum, _frame) -> None:
    raise Stopped


def _recv(conn: socket.socket) -> bytes | None:
    try:
        return conn.recv(1)
    except OSError:
        return None


if __name__ == "__main__":
    try:
        Resident(*sys.argv[1:3]).serve()
    except Stopped:  # its head stops next: its Ray job and workers end with it, no teardown to wait for
        sys.stdout.flush()
        os._exit(0)
