#!/usr/bin/env python3
"""Pre-compute N signed webhook requests for the ingest benchmark.

Output: one request per line, fields separated by TAB:

    BODY <TAB> Header-Name: value <TAB> Header-Name: value ...

The body is compact JSON (never contains a raw TAB or newline). Every body has
the same length: ids are fixed width. The file is read by replay.lua (wrk) and
by fixed_rate.py, which send each line at most once.

Formats:
  pipehook  Standard Webhooks / Svix: webhook-id, webhook-timestamp,
            webhook-signature: v1,base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
            with key = base64decode(secret without "whsec_").
  webhook   adnanh/webhook payload-hmac-sha256: X-Signature: sha256=hex(HMAC(secret, body)).

Timestamps are "now" at generation time, so generate right before each run
(pipehook rejects timestamps more than 300 s away from its clock).

Standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import sys
import time

PIPEHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_SECRET = "bench-webhook-secret"


def svix_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret)


def svix_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    mac = hmac.digest(key, signed, hashlib.sha256)
    return "v1," + base64.b64encode(mac).decode()


def selftest() -> None:
    """The Standard Webhooks / Svix published test vector."""
    got = svix_signature(
        svix_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    if got != want:
        sys.exit(f"gen_requests: signature self-test FAILED: got {got}, want {want}")


def body_for(tag: str) -> bytes:
    """A Pipevideo completion event; `tag` is unique and fixed width."""
    event = {
        "eventType": "video.generation.completed",
        "generationId": f"gen_{tag}",
        "status": "completed",
        "outputUrl": f"https://example.com/v/{tag}.mp4",
        "errorMessage": None,
    }
    return json.dumps(event, separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=["pipehook", "webhook"], default="pipehook")
    ap.add_argument("--count", type=int, default=0, help="number of requests")
    ap.add_argument("--out", help="output file")
    ap.add_argument("--secret", help="signing secret (default: the bench secret of the format)")
    ap.add_argument("--selftest", action="store_true", help="only check the known Svix test vector")
    args = ap.parse_args()

    selftest()
    if args.selftest:
        print("gen_requests: signature self-test OK")
        return
    if not args.out or args.count <= 0:
        ap.error("--out and a positive --count are required")

    run = secrets.token_hex(4)  # unique per generated file: ids never repeat across pools/runs
    ts = int(time.time())
    key_pipehook = svix_key(args.secret or PIPEHOOK_SECRET)
    key_webhook = (args.secret or WEBHOOK_SECRET).encode()

    with open(args.out, "w", buffering=1 << 20) as out:
        for i in range(args.count):
            tag = f"{run}_{i:010d}"
            body = body_for(tag)
            if args.format == "pipehook":
                msg_id = f"msg_{tag}"
                sig = svix_signature(key_pipehook, msg_id, ts, body)
                headers = (
                    "Content-Type: application/json",
                    f"webhook-id: {msg_id}",
                    f"webhook-timestamp: {ts}",
                    f"webhook-signature: {sig}",
                )
            else:
                sig = hmac.new(key_webhook, body, hashlib.sha256).hexdigest()
                headers = (
                    "Content-Type: application/json",
                    f"X-Signature: sha256={sig}",
                )
            out.write(body.decode())
            for h in headers:
                out.write("\t")
                out.write(h)
            out.write("\n")
    print(f"gen_requests: wrote {args.count} {args.format} requests "
          f"(body {len(body)} bytes, timestamp {ts}) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
