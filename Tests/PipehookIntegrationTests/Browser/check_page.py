#!/usr/bin/env python3
"""Loads the status page in headless Chromium and reports what a person sees.

Usage: check_page.py URL TOKEN [SCENARIO]

Talks to Chromium over the DevTools pipe (--remote-debugging-pipe: commands in on fd 3,
replies and events out on fd 4, each message JSON ending in a NUL byte), so no websocket
library is needed. Prints one JSON object to stdout:
  loaded:   innerText right after the page loaded
  expanded: innerText after clicking every folded <summary>
  clicked:  innerText after clicking the first form button (Retry) and the next page load
  statuses: HTTP status of each main-document response, in order
  urls:     document URL after each load
With SCENARIO (a JSON file: a list of steps) it walks those steps instead and prints
  results:  {name: value} of every step that has "as"
  statuses, urls as above
  media:    [[status, Range header]] of every media request the page made (a <video> seeks by range)
Steps (paths are relative to URL's origin; every selector must match or the run fails):
  {"goto": PATH}                         navigate and wait for the new document
  {"fill": SELECTOR, "value": TEXT}      set an input's or select's value (input/change fired)
  {"click": SELECTOR, "navigate": BOOL}  click; with navigate, wait for the next document
  {"text": true, "as": NAME}             the page's innerText
  {"eval": JS, "as": NAME, "await": BOOL} an expression's value (a promise awaited with await)
  {"wait": JS, "seconds": S}             until the expression is truthy (default 15 s)
  {"screenshot": FILE}                   a PNG of the page as it is
  {"touch": FILE}                        create FILE (tells the test the page is at this point)
Exits 2 with {"error": ...} on failure; Chromium is killed in every case (60 s cap overall,
120 s with a scenario).
"""
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

DEADLINE = time.monotonic() + (120 if len(sys.argv) > 3 else 60)


class Failure(Exception):
    pass


def move_high(fd):
    """Duplicates fd to a number >= 10 and closes the original (frees 3 and 4 for the child)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


class Browser:
    def __init__(self, profile):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        to_child, from_parent = move_high(to_child), move_high(from_parent)
        to_parent, from_child = move_high(to_parent), move_high(from_child)
        if is_open(3) or is_open(4):
            raise Failure("fd 3 or 4 is already in use; cannot hand Chromium its DevTools pipe")
        # Chromium expects the pipe at exactly fd 3 (commands in) and fd 4 (messages out).
        os.dup2(to_child, 3)
        os.dup2(from_child, 4)
        try:
            self.process = subprocess.Popen(
                [
                    "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                    "--user-data-dir=" + profile, "about:blank",
                ],
                pass_fds=(3, 4),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                # Its own process group, so the renderer and helpers die with it.
                start_new_session=True,
            )
        finally:
            for fd in (3, 4, to_child, from_child):
                os.close(fd)
        self.write_fd = from_parent
        self.read_fd = to_parent
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def kill(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.write_fd, self.read_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_message(self):
        while b"\0" not in self.buffer:
            remaining = DEADLINE - time.monotonic()
            if remaining <= 0:
                raise Failure("timed out (60 s) waiting for Chromium")
            ready, _, _ = select.select([self.read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise Failure("Chromium closed the DevTools pipe (exit code %s)" % self.process.poll())
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=None):
        """Sends a command and returns its result; events read meanwhile are queued."""
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        data = json.dumps(command).encode() + b"\0"
        while data:
            written = os.write(self.write_fd, data)
            data = data[written:]
        while True:
            message = self._read_message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise Failure("%s failed: %s" % (method, message["error"].get("message")))
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method, session):
        """Returns the first queued or incoming event with this method for this session."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._read_message())


def run(url, token, scenario=None):
    profile = tempfile.mkdtemp(prefix="pipehook-chromium-")
    browser = None
    try:
        browser = Browser(profile)
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Network.enable", session=session)
        basic = base64.b64encode(("admin:" + token).encode()).decode()
        browser.send("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Basic " + basic}}, session=session)

        statuses, urls = [], []

        def evaluate(expression, wait_promise=False):
            result = browser.send(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": wait_promise}, session=session
            )
            if "exceptionDetails" in result:
                raise Failure("page script failed: " + json.dumps(result["exceptionDetails"])[:500])
            return result.get("result", {}).get("value")

        def text():
            return evaluate("document.body.innerText")

        def mark():
            # A load event may belong to the document we are leaving (e.g. the first about:blank);
            # the marker tells the old window from the new one.
            evaluate("window.__checkPageOld = true")

        def wait_new_document():
            while True:
                browser.wait_event("Page.loadEventFired", session)
                try:
                    if evaluate("window.__checkPageOld === undefined && document.readyState === 'complete'"):
                        break
                except Failure:
                    pass  # the context went away mid-navigation: wait for the next load
            urls.append(evaluate("location.href"))
            # Main-document responses seen so far (the redirect's 303 is not a response event).
            for event in list(browser.events):
                if (event.get("method") == "Network.responseReceived" and event.get("sessionId") == session
                        and event["params"].get("type") == "Document"):
                    browser.events.remove(event)
                    statuses.append(event["params"]["response"]["status"])

        def navigate(target):
            mark()
            navigation = browser.send("Page.navigate", {"url": target}, session=session)
            if navigation.get("errorText"):
                raise Failure("navigation failed: " + navigation["errorText"])
            wait_new_document()

        if scenario is not None:
            result = walk(scenario, url, navigate, evaluate, text, mark, wait_new_document, statuses, urls,
                          lambda: browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
            # Media requests by id, then the headers they went out with and the status they got
            # (the *ExtraInfo events carry what was really on the wire).
            ids = {e["params"]["requestId"] for e in browser.events
                   if e.get("method") == "Network.requestWillBeSent" and e["params"].get("type") == "Media"}
            ranges, media = {}, []
            for event in browser.events:
                params = event.get("params", {})
                if params.get("requestId") not in ids:
                    continue
                if event.get("method") in ("Network.requestWillBeSent", "Network.requestWillBeSentExtraInfo"):
                    headers = params.get("headers") or params.get("request", {}).get("headers", {})
                    for name, value in headers.items():
                        if name.lower() == "range":
                            ranges[params["requestId"]] = value
                elif event.get("method") == "Network.responseReceivedExtraInfo":
                    media.append([params["statusCode"], params["requestId"]])
            result["media"] = [[status, ranges.get(request)] for status, request in media]
            return result

        navigate(url)
        loaded = text()

        evaluate("for (const s of document.querySelectorAll('details:not([open]) > summary')) s.click(); true")
        expanded = text()

        mark()
        clicked = None
        if evaluate("(() => { const b = document.querySelector('form[action^=\"/jobs/\"] button'); if (!b) return false; b.click(); return true; })()"):
            wait_new_document()
            clicked = text()
        return {"loaded": loaded, "expanded": expanded, "clicked": clicked, "statuses": statuses, "urls": urls}
    finally:
        if browser:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


def walk(steps, url, navigate, evaluate, text, mark, wait_new_document, statuses, urls, screenshot):
    """Runs a scenario's steps in order (see the module's doc string)."""
    origin = url.split("/", 3)
    origin = "/".join(origin[:3])
    results = {}
    for index, step in enumerate(steps):
        value = None
        where = "step %d %s" % (index, json.dumps(step)[:200])
        if "goto" in step:
            navigate(origin + step["goto"])
        elif "fill" in step:
            ok = evaluate("(() => { const e = document.querySelector(%s); if (!e) return false; e.value = %s;"
                          " e.dispatchEvent(new Event('input', {bubbles: true}));"
                          " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
                          % (json.dumps(step["fill"]), json.dumps(step["value"])))
            if not ok:
                raise Failure(where + ": nothing matches the selector")
        elif "click" in step:
            if step.get("navigate"):
                mark()
            ok = evaluate("(() => { const e = document.querySelector(%s); if (!e) return false; e.click(); return true; })()"
                          % json.dumps(step["click"]))
            if not ok:
                raise Failure(where + ": nothing matches the selector")
            if step.get("navigate"):
                wait_new_document()
        elif "text" in step:
            pass
        elif "eval" in step:
            value = evaluate(step["eval"], wait_promise=bool(step.get("await")))
        elif "wait" in step:
            limit = time.monotonic() + float(step.get("seconds", 15))
            while not evaluate(step["wait"]):
                if time.monotonic() > limit:
                    raise Failure(where + ": still false after %s s" % step.get("seconds", 15))
                time.sleep(0.1)
        elif "touch" in step:
            open(step["touch"], "w").close()
        elif "screenshot" in step:
            path = step["screenshot"]
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "wb") as out:
                out.write(base64.b64decode(screenshot()))
        else:
            raise Failure(where + ": unknown step")
        if "as" in step:
            results[step["as"]] = text() if "text" in step else value
    return {"results": results, "statuses": statuses, "urls": urls}


def on_signal(signum, frame):
    raise Failure("timed out (60 s)" if signum == signal.SIGALRM else "stopped by signal %d" % signum)


def main():
    # Backstop for a blocking call the select deadline does not cover; `finally` still kills Chromium.
    signal.signal(signal.SIGALRM, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.alarm(122 if len(sys.argv) > 3 else 62)
    if len(sys.argv) not in (3, 4):
        print(json.dumps({"error": "usage: check_page.py URL TOKEN [SCENARIO]"}))
        return 2
    if shutil.which("chromium") is None:
        print(json.dumps({"error": "chromium is not installed (apt-get install chromium)"}))
        return 2
    started = time.monotonic()
    try:
        scenario = None
        if len(sys.argv) == 4:
            with open(sys.argv[3]) as steps:
                scenario = json.load(steps)
        result = run(sys.argv[1], sys.argv[2], scenario)
    except (Failure, OSError, ValueError, KeyError) as error:
        print(json.dumps({"error": "%s: %s" % (type(error).__name__, error)}))
        return 2
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
