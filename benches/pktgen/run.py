#!/usr/bin/env python3
"""Forwarding-rate benchmark of director on a veth pair, against three baselines in the same run.

    benches/pktgen/run.py --mode dr|nat|tun|baselines [options]     (dr.sh, nat.sh, tun.sh,
                                                                      baselines.sh wrap it)

Builds its topology in two network namespaces named after this process (`pkb<pid>g`: the
generator and the sink; `pkb<pid>d`: the device under test), removed on any exit (Ctrl-C too):

    pkb<pid>g: g0 ======= d0 :pkb<pid>d        DR, TUN: the director (or a baseline) on d0
               g1 ======= d1                   NAT only: the server side

`pktgen send` (pinned to CPU 0) sends TCP ACKs of established flows from g0 to the VIP through
d0; the forwarder (its forwarding thread pinned to CPU 1: the director's worker by
`worker_cpus = [1]`, with its control threads on CPU 0 as testpmd's main lcore is; the pktgen
forwarders wholly) sends them back out of d0 (DR, TUN) or d1 (NAT), where
`pktgen sink` counts them per destination MAC (the real servers' static MACs) and drops them.
Every forwarder is measured the same way, one after the other, in two phases:

1. throughput (--repeat trials, the median reported; the forwarders take turns, one trial
   each per round, so that other work on the machine weighs on all alike): the generator as
   fast as one core goes for --duration seconds: offered Mpps
   (what the generator produced), forwarded Mpps (what the sink counted over the generator's
   sending time), loss, the forwarder's CPU (utime + stime from /proc/PID/stat over the phase,
   in % of one core) and each CPU's busy and softirq share (/proc/stat);
2. latency (a round after the throughput rounds): every forwarder paced at the same
   --latency-rate (by default half the director's median forwarded rate) with stamped frames
   for --latency-duration seconds: one-way latency percentiles (generator stamp to sink, one
   clock).

Forwarders: the director (DR, NAT or TUN per --mode, one worker) and the baselines:
- testpmd: DPDK's testpmd, af_xdp PMD, macswap, on d0 (the command from ../shared/PLATFORM.md;
  `dpdk dpdk-dev librte-net-af-xdp23` are installed with apt when missing);
- hairpin: `pktgen hairpin d0`, XDP_TX with the MACs swapped: the most this machine forwards;
- macswap: `pktgen macswap d0`, a bare AF_XDP loop on the director's own socket, classifier
  and ring handling: the director's rate over it shows what the load-balancing logic costs.
Then the ratios director/testpmd, director/macswap, director/hairpin and the issue's targets.

Every process is bounded (durations and timeouts); the script stops by itself. Needs root.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AF_XDP_PMD = "/usr/lib/x86_64-linux-gnu/librte_net_af_xdp.so.23"
VIP = "192.0.2.10"
VIP_PORT = 80
# TEST-NET addresses only.
CLIENT_ADDR = "192.0.2.2"  # g0
DIRECTOR_ADDR = "192.0.2.3"  # d0
SERVER_SIDE_ADDR = "198.51.100.1"  # d1 (NAT)
SERVER_SIDE_PEER = "198.51.100.254"  # g1 (NAT)
REAL_SERVERS = {
    "dr": ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"],
    "tun": ["203.0.113.11", "203.0.113.12", "203.0.113.13", "203.0.113.14"],
    "nat": ["198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"],
}
NAT_PORT = 8080
GENERATOR_CPU = "0"
FORWARDER_CPU = "1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

CHILDREN = []  # every process started, stopped on exit


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rs_mac(index):
    return f"02:00:00:00:01:{index + 1:02x}"


def run(argv, check=True, timeout=120, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stdout}{result.stderr}"
        )
    return result


def stop_process(proc, sig=signal.SIGINT, timeout=STOP_TIMEOUT):
    """Signals `proc` and waits for it (SIGKILL after `timeout`)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


class Lab:
    """The two namespaces and their veths; deleted by `teardown` (registered with atexit)."""

    def __init__(self, mode):
        prefix = f"pkb{os.getpid()}"
        self.gen = prefix + "g"
        self.dut = prefix + "d"
        self.mode = mode
        self.made = []

    def ns(self, name, *argv):
        return ["ip", "netns", "exec", name, *argv]

    def setup(self):
        for name in (self.gen, self.dut):
            run(["ip", "netns", "add", name])
            self.made.append(name)
            # No router solicitations or MLD reports: the sink counts only what is forwarded.
            run(self.ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"))
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        pairs = [("g0", "d0")] + ([("g1", "d1")] if self.mode == "nat" else [])
        for gen_if, dut_if in pairs:
            run(["ip", "-n", self.gen, "link", "add", gen_if, "type", "veth", "peer", "name",
                 dut_if, "netns", self.dut])
            run(["ip", "-n", self.gen, "link", "set", gen_if, "up"])
            run(["ip", "-n", self.dut, "link", "set", dut_if, "up"])
        run(["ip", "-n", self.gen, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "g0"])
        run(["ip", "-n", self.dut, "addr", "add", f"{DIRECTOR_ADDR}/24", "dev", "d0"])
        if self.mode == "nat":
            run(["ip", "-n", self.gen, "addr", "add", f"{SERVER_SIDE_PEER}/24", "dev", "g1"])
            run(["ip", "-n", self.dut, "addr", "add", f"{SERVER_SIDE_ADDR}/24", "dev", "d1"])
            # The client side's default gateway (the NAT replies' next hop), resolved statically.
            run(["ip", "-n", self.dut, "route", "add", "default", "via", CLIENT_ADDR])
            run(["ip", "-n", self.dut, "neigh", "replace", CLIENT_ADDR, "lladdr",
                 self.mac(self.gen, "g0"), "dev", "d0", "nud", "permanent"])

    def mac(self, name, iface):
        return run(self.ns(name, "cat", f"/sys/class/net/{iface}/address")).stdout.strip()

    def egress(self):
        """Where the director's frames arrive in the generator's namespace (the baselines'
        always come back on g0)."""
        return "g1" if self.mode == "nat" else "g0"

    def clear_xdp(self):
        """Detaches whatever a finished forwarder may have left on d0 (our namespace only)."""
        run(["ip", "-n", self.dut, "link", "set", "d0", "xdp", "off"], check=False)

    def teardown(self):
        for name in self.made:
            run(["ip", "netns", "del", name], check=False)
        self.made = []


def cleanup(lab, scratch):
    for proc in CHILDREN:
        stop_process(proc, timeout=5)
    if lab is not None:
        lab.teardown()
    if scratch and os.path.isdir(scratch):
        shutil.rmtree(scratch, ignore_errors=True)


class Background:
    """A process whose stderr is read by a thread; `wait_ready` waits for a marker line."""

    def __init__(self, argv, stdout=subprocess.PIPE, marker=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, text=True)
        CHILDREN.append(self.proc)
        self.lines = []
        self.marker = marker
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.marker and self.marker in line:
                self.ready.set()

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"{' '.join(self.argv)} did not get ready:\n" + "\n".join(self.lines[-20:]))

    def finish_json(self, sig=signal.SIGINT):
        """Stops the process (if still running) and parses the JSON it printed."""
        stop_process(self.proc, sig)
        out = self.proc.stdout.read() if self.proc.stdout else ""
        self.reader.join(timeout=5)
        try:
            return json.loads(out)
        except json.JSONDecodeError as error:
            raise RuntimeError(f"{' '.join(self.argv)}: no JSON ({error}): {out!r}\n"
                               + "\n".join(self.lines[-20:]))


def proc_cpu_seconds(pid):
    """utime + stime of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times():
    """Per-CPU (busy, softirq, total) jiffies from /proc/stat."""
    times = {}
    with open("/proc/stat") as stat:
        for line in stat:
            match = re.match(r"cpu(\d+) (.*)", line)
            if match:
                values = [int(v) for v in match.group(2).split()]
                idle = values[3] + values[4]
                total = sum(values[:8])
                times[match.group(1)] = (total - idle, values[6], total)
    return times


def cpu_shares(before, after):
    shares = {}
    for cpu, (busy, softirq, total) in after.items():
        b0, s0, t0 = before.get(cpu, (0, 0, 0))
        span = max(total - t0, 1)
        shares[cpu] = {"busy_pct": 100.0 * (busy - b0) / span,
                       "softirq_pct": 100.0 * (softirq - s0) / span}
    return shares


# A forwarder's AF_XDP socket outlives its process for a moment (the kernel releases it after
# the last reference goes), so the next forwarder's bind on the same queue can fail with EBUSY;
# this kernel has no XDP socket diagnostics (`ss --xdp`) to wait on, so such a start is retried.
QUEUE_BUSY = re.compile(r"errno 16|os error 16|Device or resource busy")
QUEUE_BUSY_RETRIES = 20
QUEUE_BUSY_PAUSE = 0.25


def start_when_queue_free(start):
    """Calls `start` (a Bench.start_*), again while it fails because d0's queue is still bound
    to the previous forwarder's socket: at most QUEUE_BUSY_RETRIES times."""
    for attempt in range(QUEUE_BUSY_RETRIES):
        last = attempt == QUEUE_BUSY_RETRIES - 1
        try:
            session = start()
        except RuntimeError as error:
            if last or not QUEUE_BUSY.search(str(error)):
                raise
            time.sleep(QUEUE_BUSY_PAUSE)
            continue
        if isinstance(session, str) and QUEUE_BUSY.search(session) and not last:
            time.sleep(QUEUE_BUSY_PAUSE)
            continue
        return session
    raise AssertionError("unreachable")


class Bench:
    def __init__(self, args, lab, bins, scratch):
        self.args = args
        self.lab = lab
        self.bins = bins
        self.scratch = scratch
        self.dut_mac = lab.mac(lab.dut, "d0")

    def pktgen(self, *argv):
        return [os.path.join(self.bins, "pktgen"), *argv]

    def send(self, extra, timeout):
        argv = self.lab.ns(self.lab.gen, "taskset", "-c", GENERATOR_CPU, *self.pktgen(
            "send", "g0", "--dst-mac", self.dut_mac, "--dst-ip", VIP, "--dst-port",
            str(VIP_PORT), "--kind", self.args.kind, "--flows", str(self.args.flows),
            "--size", str(self.args.size), "--json", *extra))
        result = run(argv, timeout=timeout)
        return json.loads(result.stdout)

    def sink(self, egress, latency):
        argv = self.lab.ns(self.lab.gen, *self.pktgen(
            "sink", egress, "--duration", "10m", "--json",
            *(["--latency"] if latency else [])))
        sink = Background(argv, marker="ready on")
        sink.wait_ready()
        if self.args.sink_napi_cpu is not None:
            self.move_sink_napi(egress, self.args.sink_napi_cpu)
        return sink

    def move_sink_napi(self, egress, cpu):
        """Runs the sink's receive path (the egress veth's NAPI, which otherwise runs in softirq
        on the CPU that transmitted: the forwarder's) in a kernel thread pinned to `cpu`. The
        NAPI exists while the sink's XDP program is attached, so this follows every sink start;
        the kernel names the thread napi/IFACE-ID. SCHED_FIFO, so that it preempts the generator
        on arrival as a softirq would, instead of waiting out the generator's time slice."""
        run(self.lab.ns(self.lab.gen, "sh", "-c", f"echo 1 > /sys/class/net/{egress}/threaded"))
        moved = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    name = comm.read().strip()
            except OSError:
                continue
            if name.startswith(f"napi/{egress}-"):
                run(["taskset", "-pc", str(cpu), entry])
                run(["chrt", "-f", "-p", "50", entry])
                moved += 1
        if not moved:
            raise RuntimeError(f"no napi/{egress}-* thread after enabling threaded NAPI")

    def warm_up(self):
        """Every flow seen a few times (for the director: established connection entries)."""
        self.send(["--count", str(self.args.flows * 3), "--rate", "200k"], timeout=60)
        time.sleep(0.3)

    def throughput(self, session):
        """One throughput trial: the generator flat out for --duration seconds."""
        args = self.args
        pid = session.pid
        sink = self.sink(session.egress, latency=False)
        cpu_before = proc_cpu_seconds(pid) if pid else None
        stat_before = cpu_times()
        wall_before = time.monotonic()
        sent = self.send(["--duration", f"{args.duration}s"], timeout=args.duration + 60)
        wall = time.monotonic() - wall_before
        cpu_after = proc_cpu_seconds(pid) if pid else None
        stat_after = cpu_times()
        time.sleep(0.5)  # what is still in rings arrives
        received = sink.finish_json()
        elapsed = sent["elapsed_s"] or 1.0
        return {
            "offered_mpps": sent["frames"] / elapsed / 1e6,
            "forwarded_mpps": received["packets"] / elapsed / 1e6,
            "loss_pct": 100.0 * (1 - received["packets"] / sent["frames"]) if sent["frames"] else 0.0,
            "sent": sent,
            "received": received,
            "forwarder_cpu_pct": (100.0 * (cpu_after - cpu_before) / wall)
            if pid and session.counts_cpu else None,
            "cpus": cpu_shares(stat_before, stat_after),
            "load_average": open("/proc/loadavg").read().split()[0],
        }

    def latency(self, session, rate):
        """The latency phase: paced, stamped frames at `rate` frames per second."""
        args = self.args
        sink = self.sink(session.egress, latency=True)
        paced = self.send(["--duration", f"{args.latency_duration}s", "--rate",
                           str(rate), "--latency"],
                          timeout=args.latency_duration + 60)
        time.sleep(0.5)
        stamped = sink.finish_json()
        return stamped.get("latency"), {
            "rate_pps": rate,
            "sent": paced["frames"],
            "received": stamped["packets"],
        }

    # --- forwarders: each start_* returns a Session, or a string saying why it could not ---

    def start_director(self):
        mode = self.args.mode
        config = os.path.join(self.scratch, f"director-{mode}.toml")
        socket_path = os.path.join(self.scratch, "director.sock")
        with open(config, "w") as out:
            out.write(director_config(mode, socket_path))
        check = run(self.lab.ns(self.lab.dut, os.path.join(self.bins, "director"), "check",
                                "--config", config), check=False)
        if check.returncode != 0:
            log(f"director check refused the {mode} configuration; skipping the director:\n"
                f"{check.stdout}{check.stderr}")
            return "director check refused it: " + (check.stdout + check.stderr).strip()
        log_path = os.path.join(self.scratch, "director.log")
        logfile = open(log_path, "a")
        proc = subprocess.Popen(
            self.lab.ns(self.lab.dut, "taskset", "-c", f"{GENERATOR_CPU},{FORWARDER_CPU}",
                        os.path.join(self.bins, "director"), "run", "--config", config),
            stdout=logfile, stderr=subprocess.STDOUT)
        CHILDREN.append(proc)
        lbstat = self.lab.ns(self.lab.dut, os.path.join(self.bins, "lbstat"), "--socket",
                             socket_path, "--json")
        deadline = time.monotonic() + READY_TIMEOUT
        while not (os.path.exists(socket_path) and run(lbstat, check=False).returncode == 0):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                logfile.close()
                with open(log_path) as director_log:
                    tail = director_log.read()[-3000:]
                log(f"the director did not start; its log:\n{tail}")
                return "did not start: " + tail[-500:]
            time.sleep(0.2)
        before = json.loads(run(lbstat).stdout)

        def stop():
            after = json.loads(run(lbstat).stdout)
            stop_process(proc)
            logfile.close()
            return {"director_stats": {"before": before, "after": after}}
        return Session(proc.pid, self.lab.egress(), stop)

    def start_testpmd(self):
        if not ensure_testpmd():
            return "dpdk-testpmd or the af_xdp PMD is missing and could not be installed"
        out_path = os.path.join(self.scratch, "testpmd.log")
        out = open(out_path, "w")
        argv = self.lab.ns(
            self.lab.dut, "dpdk-testpmd", "-l", "0,1", "--main-lcore", "0", "--no-huge", "-m",
            "1024", "--no-pci", "--file-prefix", f"pkb{os.getpid()}", "-d", AF_XDP_PMD,
            "--vdev", "net_af_xdp0,iface=d0,start_queue=0,queue_count=1", "--",
            "--forward-mode=macswap", "--auto-start", "--stats-period", "1", "--nb-cores=1")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        CHILDREN.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(out_path, errors="replace") as text:
                if "Port statistics" in text.read():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                out.close()
                with open(out_path, errors="replace") as text:
                    tail = text.read()[-2000:]
                log(f"testpmd did not start:\n{tail}")
                return "did not start: " + tail[-500:]
            time.sleep(0.2)

        def stop():
            stop_process(proc)
            out.close()
            return {}
        return Session(proc.pid, "g0", stop)

    def start_pktgen(self, argv, counts_cpu=True):
        forwarder = Background(self.lab.ns(self.lab.dut, "taskset", "-c", FORWARDER_CPU,
                                           *self.pktgen(*argv)), marker="ready on")
        forwarder.wait_ready()
        return Session(forwarder.proc.pid, "g0",
                       lambda: {"forwarder_report": forwarder.finish_json()}, counts_cpu)

    def start_hairpin(self):
        # The program runs in d0's NAPI, in softirq on the generator's CPU: the process idles.
        return self.start_pktgen(["hairpin", "d0", "--duration", "10m", "--json"],
                                 counts_cpu=False)

    def start_macswap(self):
        return self.start_pktgen(["macswap", "d0", "--vip", VIP, "--port", str(VIP_PORT),
                                  "--protocol", "tcp", "--duration", "10m", "--json"])

    def run_all(self, forwarders):
        """Rounds of one throughput trial per forwarder, interleaved so that other work on the
        machine weighs on all of them alike; then a latency round, every forwarder at the same
        paced rate (by default half the director's median rate: see latency_rate). Each trial
        starts the forwarder afresh and stops it after."""
        trials = {name: [] for name, _ in forwarders}
        skipped = {}
        extra = {name: {} for name, _ in forwarders}
        for round_index in range(self.args.repeat):
            last = round_index == self.args.repeat - 1
            # Each round starts with another forwarder, so none always runs first or after the
            # same one.
            shift = round_index % len(forwarders)
            for name, start in forwarders[shift:] + forwarders[:shift]:
                if name in skipped:
                    continue
                session = start_when_queue_free(start)
                if isinstance(session, str):
                    skipped[name] = session
                    continue
                try:
                    self.warm_up()
                    trial = self.throughput(session)
                    trials[name].append(trial)
                    log(f"round {round_index + 1}: {name}: offered {trial['offered_mpps']:.3f} "
                        f"Mpps, forwarded {trial['forwarded_mpps']:.3f} Mpps")
                finally:
                    stopped = session.stop()
                    self.lab.clear_xdp()
                if last:
                    extra[name].update(stopped)
        medians = {}
        for name, _ in forwarders:
            if trials[name]:
                ordered = sorted(trials[name], key=lambda trial: trial["forwarded_mpps"])
                medians[name] = ordered[len(ordered) // 2]
        rate = self.latency_rate(medians)
        for name, start in forwarders:
            if name in skipped or not rate:
                continue
            session = start_when_queue_free(start)
            if isinstance(session, str):
                continue
            try:
                self.warm_up()
                extra[name].update(zip(("latency", "latency_phase"), self.latency(session, rate)))
                log(f"latency: {name} at {rate} pps: p99 "
                    f"{(extra[name]['latency'] or {}).get('p99_ns', 0) / 1000:.1f} us")
            finally:
                session.stop()
                self.lab.clear_xdp()
        results = []
        for name, _ in forwarders:
            if name in skipped:
                results.append({"forwarder": name, "skipped": skipped[name]})
                continue
            # The median trial stands for the forwarder; every trial's rate is kept.
            result = dict(medians[name])
            result["forwarder"] = name
            result["trials_forwarded_mpps"] = [trial["forwarded_mpps"] for trial in trials[name]]
            result.update(extra[name])
            results.append(result)
        return results

    def latency_rate(self, medians):
        """The latency phase's rate: --latency-rate if a number; with "half" (the default),
        half the director's median forwarded rate (the issue's "half of the maximum rate"), or
        without a director half the slowest AF_XDP forwarder's; at least 1000 pps."""
        if self.args.latency_rate != "half":
            return int(self.args.latency_rate)
        director = [m for name, m in medians.items() if name.startswith("director")]
        others = [m for name, m in medians.items() if not name.startswith("hairpin")]
        basis = director or others or list(medians.values())
        if not basis:
            return None
        slowest = min(m["forwarded_mpps"] for m in basis)
        return max(1000, int(slowest * 1e6 / 2))


class Session:
    """A running forwarder: its process, where its frames arrive, and how to stop it."""

    def __init__(self, pid, egress, stop, counts_cpu=True):
        self.pid = pid
        self.egress = egress
        self.stop = stop
        self.counts_cpu = counts_cpu


def director_config(mode, socket_path):
    interfaces = '["d0", "d1"]' if mode == "nat" else '["d0"]'
    lines = [
        "# Generated by benches/pktgen/run.py.",
        "[director]",
        f"interfaces = {interfaces}",
        "workers = 1",
        # The worker on the forwarder's CPU, the control threads off it (on the generator's):
        # as testpmd's forwarding lcore and main lcore below.
        f"worker_cpus = [{FORWARDER_CPU}]",
        f'stats_socket = "{socket_path}"',
        "",
        "[[service]]",
        'name = "bench"',
        f'vip = "{VIP}"',
        f"port = {VIP_PORT}",
        'protocol = "tcp"',
        'scheduler = "maglev"',
        f'forwarding = "{mode}"',
    ]
    for index, address in enumerate(REAL_SERVERS[mode]):
        lines += ["", "[[service.backend]]", f'address = "{address}"', f'mac = "{rs_mac(index)}"']
        if mode == "nat":
            lines.append(f"port = {NAT_PORT}")
    return "\n".join(lines) + "\n"


def ensure_testpmd():
    if shutil.which("dpdk-testpmd") and os.path.exists(AF_XDP_PMD):
        return True
    log("installing dpdk, dpdk-dev and librte-net-af-xdp23 (for the testpmd baseline)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "dpdk",
                  "dpdk-dev", "librte-net-af-xdp23"]):
        if subprocess.run(argv, env=env, capture_output=True, timeout=900).returncode != 0:
            log(f"{' '.join(argv)} failed")
            return False
    return shutil.which("dpdk-testpmd") is not None and os.path.exists(AF_XDP_PMD)


def build(args):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    bins = args.bin_dir or os.path.join(target, "release")
    if not args.no_build and not args.bin_dir:
        log("cargo build --release -p control -p lbstat -p pktgen")
        result = subprocess.run(["cargo", "build", "--release", "-p", "control", "-p", "lbstat",
                                 "-p", "pktgen"], cwd=REPO)
        if result.returncode != 0:
            sys.exit("build failed; fix it, or run with --no-build on binaries built earlier")
    for name in ("director", "lbstat", "pktgen"):
        if not os.path.exists(os.path.join(bins, name)):
            sys.exit(f"{os.path.join(bins, name)} is missing: build it (cargo build --release)")
    return bins


def fmt(value, spec=".3f", none="-"):
    return none if value is None else format(value, spec)


def report(args, results, meta):
    print()
    print(f"pktgen benchmark, mode {args.mode}: {args.size}-byte TCP {args.kind.upper()} frames, "
          f"{args.flows} flows, median of {args.repeat} x {args.duration} s per forwarder; latency at "
          f"{meta.get('latency_rate_pps', '-')} pps ({args.latency_rate}) for "
          f"{args.latency_duration} s")
    if args.sink_napi_cpu is not None:
        print(f"the sink's receive path in a threaded NAPI on CPU {args.sink_napi_cpu}")
    print(f"{meta['date']} on {meta['machine']}; load average before {meta['load_before']}, "
          f"after {meta['load_after']}")
    header = (f"{'forwarder':<20}{'offered':>9}{'forwarded':>11}{'loss':>7}{'p50':>9}{'p99':>9}"
              f"{'p99.9':>9}{'fwd CPU':>9}{'cpu0':>6}{'cpu1':>6}{'si0':>5}{'si1':>5}")
    print(header)
    print(f"{'':<20}{'Mpps':>9}{'Mpps':>11}{'%':>7}{'us':>9}{'us':>9}{'us':>9}{'%':>9}"
          f"{'%':>6}{'%':>6}{'%':>5}{'%':>5}")
    for result in results:
        if "skipped" in result:
            print(f"{result['forwarder']:<20}  skipped: {result['skipped'].splitlines()[0][:90]}")
            continue
        latency = result.get("latency") or {}
        cpus = result["cpus"]

        def us(key):
            if key not in latency:
                return "-"
            value = latency[key] / 1000
            return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
        print(f"{result['forwarder']:<20}{fmt(result['offered_mpps']):>9}"
              f"{fmt(result['forwarded_mpps']):>11}{fmt(result['loss_pct'], '.1f'):>7}"
              f"{us('p50_ns'):>9}{us('p99_ns'):>9}"
              f"{us('p999_ns'):>9}{fmt(result['forwarder_cpu_pct'], '.0f'):>9}"
              f"{fmt(cpus.get('0', {}).get('busy_pct'), '.0f'):>6}"
              f"{fmt(cpus.get('1', {}).get('busy_pct'), '.0f'):>6}"
              f"{fmt(cpus.get('0', {}).get('softirq_pct'), '.0f'):>5}"
              f"{fmt(cpus.get('1', {}).get('softirq_pct'), '.0f'):>5}")
    print("throughput trials (forwarded Mpps): " + "; ".join(
        f"{r['forwarder']} " + " ".join(f"{rate:.3f}" for rate in r["trials_forwarded_mpps"])
        for r in results if "skipped" not in r))
    by_name = {r["forwarder"]: r for r in results if "skipped" not in r}
    director = next((r for name, r in by_name.items() if name.startswith("director")), None)
    if director:
        spread = director["received"]["by_dst_mac"]
        print("spread over real servers (sink, by destination MAC): " + ", ".join(
            f"{entry['mac']} {100 * entry['share']:.1f}%" for entry in spread))
        # Paired by round: a round's trials run back to back, so their ratio cancels most of
        # what the machine's other work does to both, which the ratio of medians does not.
        ratios = {}
        for base in ("testpmd macswap", "macswap (AF_XDP)", "hairpin (XDP_TX)"):
            if base not in by_name:
                continue
            pairs = [mine / theirs for mine, theirs in zip(director["trials_forwarded_mpps"],
                                                           by_name[base]["trials_forwarded_mpps"])
                     if theirs > 0]
            if pairs:
                ordered = sorted(pairs)
                ratios[base] = ordered[len(ordered) // 2]
                meta.setdefault("paired_ratios", {})[base] = pairs
        if ratios:
            print("ratios (forwarded Mpps, median of per-round ratios; min-max): " + ", ".join(
                f"director/{base.split()[0]} {ratio:.2f} "
                f"({min(meta['paired_ratios'][base]):.2f}-{max(meta['paired_ratios'][base]):.2f})"
                for base, ratio in ratios.items()))
        if args.mode == "dr":
            if "testpmd macswap" in ratios:
                verdict = "met" if ratios["testpmd macswap"] >= 1.0 else "NOT met"
                print(f"target DR >= testpmd macswap: {verdict} ({ratios['testpmd macswap']:.2f})")
            if "macswap (AF_XDP)" in ratios:
                verdict = "met" if ratios["macswap (AF_XDP)"] >= 0.95 else "NOT met"
                print(f"target DR >= 95% of bare AF_XDP macswap: {verdict} "
                      f"({100 * ratios['macswap (AF_XDP)']:.0f}%)")
        p99 = (director.get("latency") or {}).get("p99_ns")
        if p99 is not None and args.latency_rate == "half":
            verdict = "met" if p99 <= 50_000 else "NOT met"
            print(f"target p99 latency <= 50 us at half the director's rate: {verdict} "
                  f"({p99 / 1000:.1f} us at {meta.get('latency_rate_pps')} pps; one way, "
                  f"generator and veth hops included)")
        meta["ratios"] = ratios
    print("columns: offered = generated by pktgen send on CPU 0; forwarded = counted by the sink "
          "over the sending time; loss = 1 - forwarded/offered; p50/p99/p99.9 = one-way latency "
          "in the paced phase; fwd CPU = the forwarder process's utime+stime (% of one core); "
          "cpuN/siN = CPU N busy / in softirq over the throughput phase")


def latency_rate_arg(text):
    if text == "half":
        return text
    try:
        rate = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate in frames per second or 'half': {text!r}")
    if rate < 1:
        raise argparse.ArgumentTypeError(f"the rate must be at least 1 frame per second: {rate}")
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["dr", "nat", "tun", "baselines"], required=True)
    parser.add_argument("--duration", type=int, default=5, help="throughput phase, seconds")
    parser.add_argument("--latency-duration", type=int, default=3, help="latency phase, seconds")
    parser.add_argument("--latency-rate", default="half", type=latency_rate_arg,
                        help="latency phase rate, frames per second, or half (the default): "
                             "half the director's median forwarded rate, for every forwarder")
    parser.add_argument("--repeat", type=int, default=5,
                        help="throughput trials per forwarder; the median is reported")
    parser.add_argument("--flows", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64, help="frame size, bytes (no FCS)")
    parser.add_argument("--kind", choices=["ack", "syn"], default="ack",
                        help="ack: established flows; syn: a new flow per frame")
    parser.add_argument("--baselines", default="testpmd,hairpin,macswap",
                        help="comma-separated subset of testpmd,hairpin,macswap, or none")
    parser.add_argument("--sink-napi-cpu", type=int, metavar="CPU",
                        help="run the sink's veth receive path in a threaded NAPI kthread on CPU "
                        "(0 = the generator's) instead of in softirq on the forwarder's CPU")
    parser.add_argument("--no-build", action="store_true",
                        help="use the binaries already in the target directory")
    parser.add_argument("--bin-dir",
                        help="take director, lbstat and pktgen from here (implies --no-build)")
    parser.add_argument("--json-out", help="also write every figure to this JSON file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: this creates network namespaces and attaches XDP programs")
    for tool in ("ip", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install iproute2 util-linux)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two CPUs: the generator on CPU 0, the forwarder on CPU 1")

    bins = build(args)
    scratch = tempfile.mkdtemp(prefix="pktgen-bench-")
    lab = Lab("nat" if args.mode == "nat" else "dr")
    atexit.register(cleanup, lab, scratch)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    meta = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "load_before": open("/proc/loadavg").read().split()[0],
    }
    if float(meta["load_before"]) > 0.5:
        log(f"load average {meta['load_before']}: other work is running, figures will be noisy")
    lab.setup()
    bench = Bench(args, lab, bins, scratch)
    forwarders = []
    if args.mode != "baselines":
        forwarders.append((f"director ({args.mode})", bench.start_director))
    wanted = [b for b in args.baselines.split(",") if b and b != "none"]
    names = {"testpmd": "testpmd macswap", "hairpin": "hairpin (XDP_TX)",
             "macswap": "macswap (AF_XDP)"}
    for baseline in ("testpmd", "hairpin", "macswap"):
        if baseline in wanted:
            forwarders.append((names[baseline], getattr(bench, f"start_{baseline}")))
    results = bench.run_all(forwarders)
    meta["latency_rate_pps"] = next(
        (r["latency_phase"]["rate_pps"] for r in results if "latency_phase" in r), None)
    meta["load_after"] = open("/proc/loadavg").read().split()[0]
    report(args, results, meta)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({"args": vars(args), "meta": meta, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
