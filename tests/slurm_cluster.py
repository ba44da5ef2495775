"""A real single-node Slurm cluster on localhost for the tests (Debian's ``slurm-wlm`` + ``munge``).

:func:`start_cluster` writes ``slurm.conf`` and ``cgroup.conf`` into a temporary folder (by default no
accounting, so ``sacct`` fails as on a cluster without slurmdbd; no GPUs, so a job asking for
one is refused as on a CPU partition), starts ``munged``, ``slurmctld`` and ``slurmd`` with their
own PID, state, spool and log files and free ports, sets ``SLURM_CONF`` for the clients
(``sbatch``, ``squeue``, ``scancel``) and waits until ``sinfo`` shows the node idle.
:meth:`SlurmCluster.stop` stops the three daemons by the PIDs it started. Nothing outside the
folder is written, so it runs beside any other Slurm on the machine.

``start_cluster(root, accounting=True)`` adds what a cluster with accounting has: a MariaDB server
(``mariadb-install-db`` into the folder, its own socket and port) holding ``slurm_acct_db``, and
``slurmdbd`` storing the jobs there, so ``sacct`` answers for jobs ``squeue`` has forgotten (which it
does 2 s after they end here: ``MinJobAge=2``). Debian's ``slurmdbd`` and ``mariadb-server``; without
them those tests skip with :data:`ACCOUNTING_SKIP_REASON`.

Without the binaries the tests skip with :data:`SKIP_REASON` (``.ci/run`` installs them).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Optional

SKIP_REASON = "install slurm-wlm and munge (apt-get) to run the real-Slurm tests"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")
ACCOUNTING_SKIP_REASON = "install slurmdbd and mariadb-server (apt-get) to run the Slurm accounting tests"
ACCOUNTING = ("slurmdbd", "sacctmgr", "mariadb-install-db", "mariadbd", "mariadb")
DB_NAME, DB_USER = "slurm_acct_db", "slurm"


def _find(name: str) -> Optional[str]:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def missing_binaries(accounting: bool = False) -> list[str]:
    return [n for n in (*DAEMONS, *CLIENTS, *(ACCOUNTING if accounting else ())) if _find(n) is None]


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 // 2        # half: leave room for the rest of the machine
    return 1024


@dataclass
class SlurmCluster:
    root: str
    node: str
    env: dict                                   # the environment of a Slurm client (SLURM_CONF set)
    pids: dict = field(default_factory=dict)    # daemon -> PID

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def squeue(self) -> list[dict]:
        """The jobs Slurm holds: id (array tasks as ``<array>_<task>``), name, state, reason."""
        r = self.run("squeue", "-h", "-r", "-o", "%i|%j|%T|%r")
        out = []
        for line in r.stdout.splitlines():
            if line.strip():
                jid, name, state, reason = line.split("|", 3)
                out.append({"id": jid, "name": name, "state": state, "reason": reason})
        return out

    def wait_empty(self, timeout: float = 300, release_requeued: bool = False) -> None:
        """Wait until Slurm holds no job. ``release_requeued``: start a requeued job at once instead
        of after the 2 minutes Slurm makes it wait (``Reason=BeginTime``), to keep the tests short."""
        end = time.time() + timeout
        while True:
            queue = self.squeue()
            if not queue:
                return
            if time.time() > end:
                raise TimeoutError(f"Slurm queue not empty after {timeout}s: {queue}")
            if release_requeued:
                for job in queue:
                    if job["state"] == "PENDING" and job["reason"] == "BeginTime":
                        self.run("scontrol", "update", f"JobId={job['id']}", "StartTime=now", check=False)
            time.sleep(1)

    def log(self, daemon: str) -> str:
        path = os.path.join(self.root, f"{daemon}.log")
        return open(path).read() if os.path.isfile(path) else ""

    def stop(self) -> None:
        """Cancel every job of this cluster and wait for them to end (a job step left running
        would outlive slurmd), then stop the daemons that :func:`start_cluster` started (their
        PIDs only), slurmd first."""
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            try:
                self.run("scancel", "--partition=debug", check=False)
                end = time.time() + 60
                while time.time() < end and self.run("squeue", "-h", check=False).stdout.strip():
                    time.sleep(0.5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            self.stop_daemon(name)

    def stop_daemon(self, name: str) -> None:
        """SIGTERM to the daemon's PID, SIGKILL after 15 s."""
        pid = self.pids.get(name)
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        end = time.time() + 15
        while time.time() < end and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)              # mariadbd is our child (it does not daemonize): reap it
        except ChildProcessError:
            pass

    def start_slurmdbd(self) -> None:
        """Start slurmdbd (again) with the slurmdbd.conf beside slurm.conf."""
        pid_file = os.path.join(self.root, "slurmdbd.pid")
        if os.path.exists(pid_file):
            os.remove(pid_file)             # not to read the PID of a slurmdbd stopped before
        subprocess.run([_find("slurmdbd")], env=self.env, check=True, capture_output=True, timeout=30)
        self.pids["slurmdbd"] = _read_pid(pid_file)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path: str, timeout: float = 20) -> int:
    end = time.time() + timeout
    while time.time() < end:
        try:
            text = open(path).read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no PID file {path} after {timeout}s")


def write_config(root: str, node: str, ports: list[int], munge_socket: str, cpus: int, memory_mb: int,
                 dbd_port: Optional[int] = None) -> str:
    """slurm.conf; with ``dbd_port`` the jobs are stored by the slurmdbd listening there, and squeue
    forgets a finished job after 2 s (instead of 5 minutes) so that sacct has to answer for it."""
    conf = os.path.join(root, "slurm.conf")
    if dbd_port is None:
        accounting = ["AccountingStorageType=accounting_storage/none", "MinJobAge=300"]
    else:
        accounting = ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                      f"AccountingStoragePort={dbd_port}", "MinJobAge=2",
                      f"AccountingStoragePass={munge_socket}"]    # the munged that speaks to slurmdbd
    lines = [
        "ClusterName=mmloptest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root}/ctld_state",
        f"SlurmdSpoolDir={root}/slurmd_spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        *accounting,
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=1",
        "KillWait=10",
        "InactiveLimit=0",
        "SlurmdTimeout=60",
        "MessageTimeout=20",
        f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
    ]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "cgroup.conf"), "w") as f:
        f.write("CgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\n")
    return conf


def _start_database(cluster: SlurmCluster, port: int, password: str, timeout: float) -> None:
    """MariaDB in ``<root>/mysql`` on 127.0.0.1:``port`` (TCP, as slurmdbd reaches it) and its own
    socket (for the set-up here), with the ``slurm_acct_db`` database and its user."""
    root, env = cluster.root, cluster.env
    data, sock = os.path.join(root, "mysql"), os.path.join(root, "mysql.sock")
    subprocess.run([_find("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   env=env, check=True, capture_output=True, timeout=120)
    subprocess.Popen([_find("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
                      "--bind-address=127.0.0.1", "--skip-name-resolve", "--user=root",
                      f"--pid-file={root}/mariadbd.pid", f"--log-error={root}/mariadbd.log"],
                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    cluster.pids["mariadbd"] = _read_pid(f"{root}/mariadbd.pid", timeout)
    sql = (f"CREATE DATABASE {DB_NAME}; CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';")
    end = time.time() + timeout
    while True:
        r = cluster.run(_find("mariadb"), "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql, check=False)
        if r.returncode == 0:
            return
        if time.time() > end:
            raise RuntimeError(f"MariaDB did not take the set-up SQL after {timeout}s: {r.stderr.strip()}; "
                               f"mariadbd.log:\n{cluster.log('mariadbd')[-2000:]}")
        time.sleep(0.5)


def _start_slurmdbd(cluster: SlurmCluster, munge_socket: str, dbd_port: int, db_port: int, password: str,
                    timeout: float) -> None:
    """slurmdbd with its slurmdbd.conf beside slurm.conf (where it looks for it), mode 600 and owned by
    the user running it (slurmdbd refuses it otherwise: it holds the database password); then the
    cluster registered, before slurmctld asks for it."""
    root = cluster.root
    conf = os.path.join(root, "slurmdbd.conf")
    lines = ["AuthType=auth/munge", f"AuthInfo=socket={munge_socket}", "DbdHost=localhost", "DbdAddr=127.0.0.1",
             f"DbdPort={dbd_port}", f"SlurmUser={pwd.getpwuid(os.geteuid()).pw_name}", f"PidFile={root}/slurmdbd.pid",
             f"LogFile={root}/slurmdbd.log", "DebugLevel=info", "StorageType=accounting_storage/mysql",
             "StorageHost=127.0.0.1", f"StoragePort={db_port}", f"StorageLoc={DB_NAME}", f"StorageUser={DB_USER}",
             f"StoragePass={password}"]
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    cluster.start_slurmdbd()
    end = time.time() + timeout
    while True:
        r = cluster.run(_find("sacctmgr"), "-i", "add", "cluster", "mmloptest", check=False)
        if r.returncode == 0 or "already exists" in (r.stdout + r.stderr):
            return
        if time.time() > end:
            raise RuntimeError(f"sacctmgr could not register the cluster after {timeout}s: {r.stderr.strip()}; "
                               f"slurmdbd.log:\n{cluster.log('slurmdbd')[-2000:]}")
        time.sleep(0.5)


def start_cluster(root: str, timeout: float = 60, accounting: bool = False) -> SlurmCluster:
    """Start the cluster in ``root`` (see the module docstring); stopped again if it does not come up."""
    root = os.path.abspath(root)
    for sub in ("ctld_state", "slurmd_spool", "munge"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.chmod(os.path.join(root, "munge"), 0o700)
    node = socket.gethostname().split(".")[0]
    munge_dir = os.path.join(root, "munge")
    munge_socket = os.path.join(munge_dir, "munge.socket")
    key = os.path.join(munge_dir, "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o600)
    ports = _free_ports(4)
    conf = write_config(root, node, ports[:2], munge_socket, _cpus(), _memory_mb(),
                        dbd_port=ports[2] if accounting else None)
    env = dict(os.environ, SLURM_CONF=conf)
    cluster = SlurmCluster(root, node, env)
    try:
        subprocess.run([_find("munged"), "--force", f"--socket={munge_socket}", f"--key-file={key}",
                        f"--pid-file={munge_dir}/munged.pid", f"--log-file={root}/munged.log",
                        f"--seed-file={munge_dir}/munged.seed"], env=env, check=True, capture_output=True,
                       timeout=30)
        cluster.pids["munged"] = _read_pid(f"{munge_dir}/munged.pid")
        if accounting:
            password = os.urandom(12).hex()
            _start_database(cluster, ports[3], password, timeout)
            _start_slurmdbd(cluster, munge_socket, ports[2], ports[3], password, timeout)
        subprocess.run([_find("slurmctld"), "-f", conf], env=env, check=True, capture_output=True, timeout=30)
        cluster.pids["slurmctld"] = _read_pid(f"{root}/slurmctld.pid")
        subprocess.run([_find("slurmd"), "-f", conf, "-N", node], env=env, check=True, capture_output=True, timeout=30)
        cluster.pids["slurmd"] = _read_pid(f"{root}/slurmd.pid")
        end = time.time() + timeout
        while True:
            r = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                return cluster
            if time.time() > end:
                raise RuntimeError(f"the node is not idle after {timeout}s (sinfo: {r.stdout.strip()!r} "
                                   f"{r.stderr.strip()!r}); slurmctld.log:\n{cluster.log('slurmctld')[-2000:]}"
                                   f"\nslurmd.log:\n{cluster.log('slurmd')[-2000:]}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
