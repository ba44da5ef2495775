"""A real single-node Slurm cluster on localhost for the tests (Debian's ``slurm-wlm`` + ``munge``).

:func:`start_cluster` writes ``slurm.conf`` and ``cgroup.conf`` into a temporary folder (no
accounting, so ``sacct`` fails as on a cluster without slurmdbd; no GPUs, so a job asking for
one is refused as on a CPU partition), starts ``munged``, ``slurmctld`` and ``slurmd`` with their
own PID, state, spool and log files and free ports, sets ``SLURM_CONF`` for the clients
(``sbatch``, ``squeue``, ``scancel``) and waits until ``sinfo`` shows the node idle.
:meth:`SlurmCluster.stop` stops the three daemons by the PIDs it started. Nothing outside the
folder is written, so it runs beside any other Slurm on the machine.

Without the binaries the tests skip with :data:`SKIP_REASON` (``.ci/run`` installs them).
"""
from __future__ import annotations

import os
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


def _find(name: str) -> Optional[str]:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def missing_binaries() -> list[str]:
    return [n for n in (*DAEMONS, *CLIENTS) if _find(n) is None]


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
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if not pid:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.time() + 15
            while time.time() < end and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


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


def write_config(root: str, node: str, ports: list[int], munge_socket: str, cpus: int, memory_mb: int) -> str:
    conf = os.path.join(root, "slurm.conf")
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
        "AccountingStorageType=accounting_storage/none",
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
        "MinJobAge=300",
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


def start_cluster(root: str, timeout: float = 60) -> SlurmCluster:
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
    conf = write_config(root, node, _free_ports(2), munge_socket, _cpus(), _memory_mb())
    env = dict(os.environ, SLURM_CONF=conf)
    cluster = SlurmCluster(root, node, env)
    try:
        subprocess.run([_find("munged"), "--force", f"--socket={munge_socket}", f"--key-file={key}",
                        f"--pid-file={munge_dir}/munged.pid", f"--log-file={root}/munged.log",
                        f"--seed-file={munge_dir}/munged.seed"], env=env, check=True, capture_output=True,
                       timeout=30)
        cluster.pids["munged"] = _read_pid(f"{munge_dir}/munged.pid")
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
