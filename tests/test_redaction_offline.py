"""The stage starts and redacts with an empty home folder and every outbound connection blocked.

A child Python process gets a ``sitecustomize`` module that installs an audit hook
(``sys.addaudithook``). The hook blocks and records each ``socket.connect`` and
``socket.getaddrinfo`` for a host outside the loopback range, and each ``urllib.Request``,
before any packet is sent. tldextract, which Presidio's EmailRecognizer calls, would
otherwise fetch the Public Suffix List on its first call and write it under $HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Upper bound on the child's run, model load included. It catches a library that waits for
# a network time-out. The start-up time measured on 2 cores is in docs/privacy.md.
CHILD_BUDGET_S = 180

SITECUSTOMIZE = '''
import ipaddress
import json
import os
import socket
import sys

_LOG = os.environ["NETWORK_AUDIT_LOG"]


def _record(event, target):
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "target": str(target)}) + "\\n")


def _is_loopback(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            _record(event, address)
            raise OSError("outbound connection blocked by the offline test")
    elif event == "socket.getaddrinfo":
        if not _is_loopback(args[0]):
            _record(event, args[0])
            raise socket.gaierror("name lookup blocked by the offline test")
    elif event == "urllib.Request":
        _record(event, args[0])
        raise OSError("URL request blocked by the offline test")


sys.addaudithook(_hook)
_record("hook installed", os.getpid())
'''

CHILD = '''
import json
import socket
import sys
import time

started = time.perf_counter()
from driftloop.redaction.redactor import Redactor

with Redactor() as redactor:
    startup_s = time.perf_counter() - started
    result = redactor.redact("Mail ana@example.co.uk or see https://shop.example.co.uk/a")


class FakeSocket:
    family = socket.AF_INET


# Self-test of the hook: the event is raised by hand, so no socket exists and nothing is sent.
try:
    sys.audit("socket.connect", FakeSocket(), ("203.0.113.7", 443))
    hook_blocked = False
except OSError:
    hook_blocked = True

print(json.dumps({
    "text": result.text,
    "counts": result.entity_counts,
    "startup_s": startup_s,
    "hook_blocked": hook_blocked,
}))
'''


def run_offline_child(tmp_path: Path) -> tuple[dict, list[dict], Path]:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    audit_log = tmp_path / "network.jsonl"

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TLDEXTRACT_", "XDG_", "HF_", "SPACY_")) and key != "PYTHONPATH"
    }
    env.update(HOME=str(home), PYTHONPATH=str(site_dir), NETWORK_AUDIT_LOG=str(audit_log), PYTHONNOUSERSITE="1")
    completed = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CHILD_BUDGET_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    output = json.loads(completed.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in audit_log.read_text(encoding="utf-8").splitlines()]
    return output, records, home


def test_redacts_offline_with_empty_home(tmp_path):
    output, records, home = run_offline_child(tmp_path)

    assert output["text"] == "Mail <EMAIL_ADDRESS> or see <URL>"
    assert output["counts"] == {"EMAIL_ADDRESS": 1, "URL": 1}
    assert output["hook_blocked"] is True
    assert output["startup_s"] < CHILD_BUDGET_S
    assert records[0]["event"] == "hook installed"
    attempts = [record for record in records if record["event"] != "hook installed"]
    assert attempts == [{"event": "socket.connect", "target": "('203.0.113.7', 443)"}]
    assert not (home / ".cache" / "python-tldextract").exists()
