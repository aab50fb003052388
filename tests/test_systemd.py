"""deploy/sluice.service: systemd accepts it, and it says what the deployment needs."""

from __future__ import annotations

import configparser
import runpy
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

UNIT = ROOT / "deploy" / "sluice.service"
GUNICORN = "/opt/sluice/.venv/bin/gunicorn"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)  # strict: no key set twice
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    return float(value)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "make test installs systemd (for systemd-analyze)"
    # verify checks that ExecStart exists: point it at a stand-in, change nothing else.
    stub = tmp_path / "gunicorn"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(GUNICORN) == 1
    copy = tmp_path / "sluice.service"
    copy.write_text(text.replace(GUNICORN, str(stub)))
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_unit_runs_gunicorn_from_opt_sluice_with_its_env_file():
    service = unit()["Service"]
    assert service["ExecStart"] == f"{GUNICORN} -c gunicorn.conf.py wsgi:app"
    assert service["WorkingDirectory"] == "/opt/sluice"
    assert service["EnvironmentFile"] == "/etc/sluice.env"
    assert service["User"] == "sluice" and service["Group"] == "sluice"
    assert service["Type"] == "notify"  # gunicorn's arbiter sends READY=1
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_stops_gracefully_and_restarts_on_failure():
    service = unit()["Service"]
    graceful = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"]
    assert service["KillSignal"] == "SIGTERM"  # gunicorn's graceful shutdown
    assert service["KillMode"] == "mixed"  # the signal to the arbiter only; it stops its workers
    assert seconds(service["TimeoutStopSec"]) > graceful
    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 65536


def test_unit_is_hardened():
    service = unit()["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
