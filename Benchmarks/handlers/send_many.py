#!/usr/bin/env python3
"""Send N signed Pipevideo "completed" webhooks (unique ids and generations) to a pipehook
URL over a few keep-alive connections, as fast as it answers. Standard library only.

usage: send_many.py URL N [--threads 8] [--output-url URL]
Prints: sent=N ok=N seconds=S
"""
import argparse
import http.client
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ingest"))
from gen_requests import PIPEHOOK_SECRET, svix_key, svix_signature  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--output-url", default=None)
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.url)
    key = svix_key(PIPEHOOK_SECRET)
    run = os.urandom(4).hex()
    ok = [0] * args.threads
    errors = []

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        for i in range(index, args.n, args.threads):
            gen = f"gen_{run}_{i:07d}"
            output = args.output_url or f"https://example.com/v/{gen}.mp4"
            body = (
                '{"eventType":"video.generation.completed","generationId":"%s","status":"completed",'
                '"outputUrl":"%s","errorMessage":null}' % (gen, output)
            ).encode()
            msg_id = f"msg_{run}_{i:07d}"
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": svix_signature(key, msg_id, ts, body),
            }
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    ok[index] += 1
                else:
                    errors.append(response.status)
            except Exception as error:  # keep going; report at the end
                errors.append(repr(error))
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - start
    print(f"sent={args.n} ok={sum(ok)} errors={len(errors)} seconds={seconds:.3f}")
    if errors:
        print("first errors:", errors[:5], file=sys.stderr)


if __name__ == "__main__":
    main()
