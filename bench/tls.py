"""TLS listeners (``https_ports``): full handshakes per second and memory per idle TLS
connection, gripd against Pushpin 1.36 (condure), on loopback.

Each implementation gets a fresh server with one https port whose ``default_<port>`` certificate
(ECDSA P-256, made by trustme) is the only one. Then:

- **handshakes**: ``--procs`` ``openssl s_time -new`` processes, each making full handshakes
  (no session resumption, no request) for ``--time`` seconds. Reported: handshakes per second
  (all processes together, from s_time's "in N real seconds" lines) and the server's CPU time per
  handshake (its whole process tree, from ``/proc``), which does not depend on how fast the load
  generator is.
- **idle**: one client process opens ``--idle`` TLS connections (handshake done, no request) and
  keeps them open; reported: the growth of the server tree's RSS divided by the count.

Usage::

    .venv/bin/python bench/tls.py                       # both, 2 x 10 s of handshakes, 2,000 idle
    .venv/bin/python bench/tls.py --impl gripd --workers 2 --time 5 --idle 1000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import trustme  # noqa: E402

from tests.support.procs import free_ports, start_server  # noqa: E402
from tests.support.tlscerts import install_default_cert  # noqa: E402

IDLE_CLIENT = r"""
import asyncio, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
async def main():
    sem = asyncio.Semaphore(50)
    conns = []
    async def one():
        async with sem:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 30)
            conns.append(w)
    await asyncio.gather(*(one() for _ in range(n)))
    print("ready", len(conns), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"""

S_TIME_RE = re.compile(r"(\d+) connections in (\d+) real seconds")


def handshakes(port: int, procs: int, seconds: int) -> tuple[int, float]:
    """(handshakes, handshakes per second) of ``procs`` parallel ``openssl s_time -new`` runs
    (the rate is the sum of each run's count over its own "real seconds")."""
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)]
    runs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(procs)
    ]
    total = 0
    rate = 0.0
    for p in runs:
        out, _ = p.communicate(timeout=seconds + 60)
        m = S_TIME_RE.search(out)
        if m is None:
            raise RuntimeError(f"unexpected s_time output: {out!r}")
        total += int(m.group(1))
        rate += int(m.group(1)) / max(int(m.group(2)), 1)
    return total, rate


def idle_rss(server: object, port: int, n: int) -> tuple[int, int]:
    """(RSS growth in bytes, connections held) for ``n`` idle TLS connections."""
    rss = server.rss_bytes  # type: ignore[attr-defined]
    before = rss()
    client = subprocess.Popen(
        [sys.executable, "-c", IDLE_CLIENT, str(port), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"idle client failed: {line!r}")
        held = int(line.split()[1])
        time.sleep(2.0)  # let allocations settle
        after = rss()
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    return after - before, held


def run(impl: str, args: argparse.Namespace) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix=f"gp-tlsbench-{impl}-"))
    try:
        ca = trustme.CA()
        (port,) = free_ports(1)
        install_default_cert(ca, workdir, port)
        conf: dict[str, dict[str, str]] = {"runner": {"https_ports": f"127.0.0.1:{port}"}}
        if impl == "gripd":
            # idle connections must outlive the measurement (no request is ever sent)
            conf["gripd"] = {"workers": str(args.workers), "client_header_timeout": "600"}
        server = start_server(impl, workdir, ["* test"], conf=conf)  # type: ignore[arg-type]
        try:
            handshakes(port, 1, 1)  # warm-up
            cpu0 = server.cpu_seconds()
            n, rate = handshakes(port, args.procs, args.time)
            cpu = server.cpu_seconds() - cpu0
            grown, held = idle_rss(server, port, args.idle)
        finally:
            server.stop()
        return {
            "handshakes": n,
            "per_second": rate,
            "server_cpu_ms_per_handshake": 1000 * cpu / max(n, 1),
            "idle_connections": held,
            "idle_bytes_per_connection": grown / max(held, 1),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impl", choices=["gripd", "pushpin", "both"], default="both")
    ap.add_argument("--workers", type=int, default=1, help="gripd's [gripd] workers")
    ap.add_argument("--procs", type=int, default=2, help="parallel s_time processes (1-16)")
    ap.add_argument("--time", type=int, default=10, help="seconds of handshakes (1-120)")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections (1-20000)")
    args = ap.parse_args()
    args.procs = min(max(args.procs, 1), 16)
    args.time = min(max(args.time, 1), 120)
    args.idle = min(max(args.idle, 1), 20000)
    if shutil.which("openssl") is None:
        print("openssl is not installed", file=sys.stderr)
        return 1
    impls = ["gripd", "pushpin"] if args.impl == "both" else [args.impl]
    print(f"# nproc={os.cpu_count()} python={sys.version.split()[0]} args={vars(args)}")
    results = {impl: run(impl, args) for impl in impls}
    keys = list(next(iter(results.values())))
    print("| metric | " + " | ".join(impls) + " |")
    print("|---|" + "---|" * len(impls))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{results[i][k]:,.1f}" for i in impls) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
