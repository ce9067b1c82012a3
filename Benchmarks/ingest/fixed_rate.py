#!/usr/bin/env python3
"""Fixed-rate (open-loop) latency run; Debian's wrk has no -R (wrk2) option.

Sends the requests of a gen_requests.py file at a fixed total rate over a few
keep-alive HTTP/1.1 connections and reports latency percentiles. Request i is
due at start + i/rate and goes out on connection i % conns. Each request is
sent at most once; the run is bounded by --seconds (and by the file's length,
so generate at least rate*seconds requests) plus a drain timeout.

Two latencies are reported:
  service    response received - request written
  corrected  response received - when the request was due; includes time spent
             waiting behind a slow earlier response on the same connection
             (coordinated omission) and the client's own timer lateness.

Prints a human line and one machine-readable line for run.sh:
  FIXED rate=.. sent=.. ok=.. non2xx=.. errors=.. achieved_rps=..
        p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. cp50_ms=.. cp99_ms=..

Standard library only (asyncio streams). Only for loopback targets.
"""

import argparse
import asyncio
import math
import sys
import time
from urllib.parse import urlsplit


def load(path, count, host, target):
    reqs = []
    with open(path) as f:
        for line in f:
            if len(reqs) >= count:
                break
            fields = line.rstrip("\n").split("\t")
            body = fields[0].encode()
            head = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
            head += fields[1:]
            reqs.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return reqs


async def read_response(reader):
    """Returns the status code; reads Content-Length or chunked bodies."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked = 0, False
    for h in lines[1:]:
        name, _, value = h.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def connection(idx, conns, reqs, t0, rate, deadline, host, port, timeout, res):
    reader = writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        for i in range(idx, len(reqs), conns):
            due = t0 + i / rate
            if due >= deadline:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at = time.perf_counter()
            writer.write(reqs[i])
            res["sent"] += 1
            try:
                status = await asyncio.wait_for(read_response(reader), timeout)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
                res["errors"] += 1
                res["error_kinds"][type(e).__name__] = res["error_kinds"].get(type(e).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            now = time.perf_counter()
            res["service"].append(now - sent_at)
            res["corrected"].append(now - due)
            res["status"][status] = res["status"].get(status, 0) + 1
    except (OSError, asyncio.TimeoutError) as e:
        res["errors"] += 1
        res["error_kinds"][type(e).__name__] = res["error_kinds"].get(type(e).__name__, 0) + 1
    finally:
        if writer is not None:
            writer.close()


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = math.ceil(p / 100.0 * len(sorted_vals)) - 1  # nearest rank
    return sorted_vals[min(len(sorted_vals) - 1, max(0, k))]


async def run(args):
    u = urlsplit(args.url)
    host, port = u.hostname, u.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("fixed_rate: refusing a non-loopback target")
    target = u.path or "/"
    n = int(args.rate * args.seconds)
    reqs = load(args.requests, n, u.netloc, target)
    if len(reqs) < n:
        print(f"fixed_rate: only {len(reqs)} requests in file, need {n}; run will be short", file=sys.stderr)
    res = {"sent": 0, "errors": 0, "error_kinds": {}, "service": [], "corrected": [], "status": {}}
    t0 = time.perf_counter() + 0.2  # let the connections open first
    deadline = t0 + args.seconds
    tasks = [connection(c, args.conns, reqs, t0, args.rate, deadline, host, port, args.timeout, res)
             for c in range(args.conns)]
    # Hard bound: the schedule plus one request timeout plus a little slack.
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.seconds + args.timeout + 5)
    except asyncio.TimeoutError:
        print("fixed_rate: hard time limit hit", file=sys.stderr)
    elapsed = max(time.perf_counter() - t0, 1e-9)

    svc = sorted(res["service"])
    cor = sorted(res["corrected"])
    ok = sum(v for k, v in res["status"].items() if 200 <= k < 300)
    non2xx = sum(v for k, v in res["status"].items() if not 200 <= k < 300)
    ms = lambda x: x * 1000.0
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(res["status"].items()))
    print(f"fixed-rate {args.rate:g} req/s x {args.seconds:g} s over {args.conns} connections: "
          f"sent {res['sent']}, statuses [{statuses}], errors {res['errors']} {res['error_kinds'] or ''}")
    print(f"  service   latency ms: p50 {ms(pct(svc, 50)):.2f}  p90 {ms(pct(svc, 90)):.2f}  "
          f"p99 {ms(pct(svc, 99)):.2f}  max {ms(svc[-1] if svc else float('nan')):.2f}")
    print(f"  corrected latency ms: p50 {ms(pct(cor, 50)):.2f}  p90 {ms(pct(cor, 90)):.2f}  "
          f"p99 {ms(pct(cor, 99)):.2f}  max {ms(cor[-1] if cor else float('nan')):.2f}")
    print(f"FIXED rate={args.rate:g} sent={res['sent']} ok={ok} non2xx={non2xx} errors={res['errors']} "
          f"achieved_rps={len(svc) / elapsed:.1f} "
          f"p50_ms={ms(pct(svc, 50)):.3f} p90_ms={ms(pct(svc, 90)):.3f} p99_ms={ms(pct(svc, 99)):.3f} "
          f"max_ms={ms(svc[-1] if svc else float('nan')):.3f} "
          f"cp50_ms={ms(pct(cor, 50)):.3f} cp99_ms={ms(pct(cor, 99)):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080/webhooks/pipevideo")
    ap.add_argument("--requests", required=True, help="file from gen_requests.py")
    ap.add_argument("--rate", type=float, default=1000.0, help="total requests per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=4, help="keep-alive connections")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
