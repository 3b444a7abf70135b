"""The built stage images, run: each CLI answers `--help` as uid 10001 on a read-only root
filesystem, no layer or config holds a credential, the runtime carries no build tools, and each
image stays within its size budget. Skips without an engine or images; fails in CI (see helpers)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from typing import Any

import pytest

from tests.images.docker_helpers import (
    STAGE_CLIS,
    STAGE_UID,
    built_stages,
    docker,
    docker_cli,
    image_ref,
    require_image,
    size_limits,
)

pytestmark = pytest.mark.docker
STAGES = built_stages()
READ_ONLY = ["--rm", "--read-only", "--tmpfs", "/tmp", "--user", f"{STAGE_UID}:{STAGE_UID}", "--network", "none"]

# What must never be in an image: credential variables with a value, private keys, cloud keys.
SECRET_ENV = re.compile(r"^(PGPASSWORD|PGPASSFILE|PGSERVICEFILE|.*(TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY)[A-Z_]*)=", re.I)
SECRET_TEXT = [
    re.compile(rb"-----BEGIN (RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    re.compile(rb"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(rb"PGPASSWORD\s*=\s*['\"]?[^\s'\"$]"),
]


@pytest.mark.parametrize("stage", STAGES)
def test_cli_help_runs_as_non_root_on_a_read_only_root_filesystem(stage: str) -> None:
    require_image(stage)
    proc = docker("run", *READ_ONLY, image_ref(stage), "--help", check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Usage: {STAGE_CLIS[stage]}" in proc.stdout
    probe = 'id -u; echo "$HOME"; touch /tmp/x && ! touch /opt/x 2>/dev/null'
    whoami = docker("run", *READ_ONLY, "--entrypoint", "sh", image_ref(stage), "-c", probe)
    assert whoami.stdout.split() == [str(STAGE_UID), "/tmp"]


def test_ingest_image_refuses_to_generate_with_one_line() -> None:
    """The generator's numpy is left out of the ingest image: asking for it is a clear error, not a traceback."""
    require_image("ingest")
    proc = docker("run", *READ_ONLY, image_ref("ingest"), "generate", "--out", "/tmp/landing", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingest: error: the generator needs numpy"), proc.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_image_config(stage: str) -> None:
    config = require_image(stage)["Config"]
    assert config["User"] == f"{STAGE_UID}:{STAGE_UID}"
    assert config["Entrypoint"] == [STAGE_CLIS[stage]]
    labels = config["Labels"] or {}
    for key in ("source", "revision", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label org.opencontainers.image.{key} missing"
    leaked = [item for item in config["Env"] if SECRET_ENV.match(item)]
    assert not leaked, f"credentials in the image config: {leaked}"
    assert not [f"{k}={v}" for k, v in labels.items() if SECRET_ENV.match(f"{k}=") or any(p.search(v.encode()) for p in SECRET_TEXT)]


@pytest.mark.parametrize("stage", STAGES)
def test_no_credentials_in_history_or_in_any_layer(stage: str) -> None:
    """`docker history` (every build step's command) and every file of every layer (`docker save`)."""
    require_image(stage)
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image_ref(stage)).stdout
    assert not re.search(r"PGPASSWORD=\S|password=\S", history, re.I), history
    assert "/run/secrets/extra_ca_certs" not in history.replace("--mount=type=secret,id=extra_ca_certs", "")

    password = os.environ.get("PGPASSWORD", "").encode()
    patterns = [*SECRET_TEXT, *([re.compile(re.escape(password))] if len(password) >= 8 else [])]
    offenders: list[str] = []
    saved = subprocess.Popen([docker_cli() or "docker", "save", image_ref(stage)], stdout=subprocess.PIPE)
    assert saved.stdout is not None
    with tarfile.open(fileobj=saved.stdout, mode="r|") as image:
        for member in image:
            if not member.name.endswith("layer.tar") and not member.name.startswith("blobs/"):
                continue
            blob = image.extractfile(member)
            if blob is None:
                continue
            offenders += scan_layer(blob.read(), patterns)
    assert saved.wait() == 0
    assert not offenders, f"secrets or private keys in layers of {image_ref(stage)}: {offenders[:10]}"


def scan_layer(data: bytes, patterns: list[re.Pattern[bytes]]) -> list[str]:
    """Files of one layer that look like credentials (text files up to 2 MB are searched)."""
    found: list[str] = []
    try:
        layer = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError:
        return found  # an OCI config or manifest blob, not a layer
    with layer:
        for member in layer:
            name = member.name
            if re.search(r"(^|/)(\.env|id_rsa|id_ed25519|\.pgpass|\.netrc|\.warehouse/env|\.user\.yml)$", name):
                found.append(name)
            if not member.isfile() or member.size > 2_000_000:
                continue
            handle = layer.extractfile(member)
            content = handle.read() if handle else b""
            if b"\0" in content[:1024]:
                continue
            found += [f"{name}: {p.pattern!r}" for p in patterns if p.search(content)]
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_runtime_has_no_build_tools(stage: str) -> None:
    """Only the venv is copied in: no uv, no compiler or binutils, no pip in the venv (the base
    image's own pip, if it has one, is the base's business)."""
    require_image(stage)
    proc = docker(
        "run", *READ_ONLY, "--entrypoint", "sh", image_ref(stage), "-c",
        "for t in uv gcc cc c++ ld strip /opt/venv/bin/pip /opt/uv; do command -v $t || ls -d $t 2>/dev/null; done; ls /opt",
    )  # fmt: skip
    assert proc.stdout.split() == ["venv"], f"build tools in the runtime: {proc.stdout.split()}"


@pytest.mark.parametrize("stage", STAGES)
def test_size_within_target(stage: str) -> None:
    inspect: dict[str, Any] = require_image(stage)
    megabytes = inspect["Size"] / 1e6
    target = size_limits()[stage]
    print(f"{image_ref(stage)}: {megabytes:.0f} MB (target {target} MB)")
    assert megabytes <= target, f"{image_ref(stage)} is {megabytes:.0f} MB, over its target of {target} MB"


def test_dbt_image_parses_its_project_offline() -> None:
    """The dbt project in the image parses with no warehouse and no network, writing only to /tmp,
    and the manifest prebuilt at build time is there for tools that read it (cosmos, --state)."""
    if "dbt" not in STAGES:
        pytest.skip("dbt/ is not in this checkout yet")
    require_image("dbt")
    proc = docker("run", *READ_ONLY, "-e", "PIPELINE_RESULT_PATH=/tmp/result.json", image_ref("dbt"), "parse", timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads([ln for ln in proc.stdout.splitlines() if '"msg": "result"' in ln][-1])["result"]
    assert result["manifest"] == "/tmp/dbt-target/manifest.json"
    listing = docker("run", *READ_ONLY, "--entrypoint", "ls", image_ref("dbt"), "/app/dbt/target").stdout.split()
    assert listing == ["manifest.json"]
    # slimming the venv must leave dbt's own `tests` folders: the test materialization and generic tests
    materializations = "/opt/venv/lib/python3.11/site-packages/dbt/include/global_project/macros/materializations"
    found = docker("run", *READ_ONLY, "--entrypoint", "ls", image_ref("dbt"), f"{materializations}/tests").stdout.split()
    assert "test.sql" in found, found


def test_layer_scan_finds_planted_credentials() -> None:
    """The scanner itself: a layer with a private key, a password assignment and a .pgpass is caught."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        for name, content in {
            "app/key.pem": b"-----BEGIN RSA PRIVATE KEY-----\nMIIE...\n",
            "app/run.sh": b"export PGPASSWORD='hunter2hunter2'\n",
            "tmp/.pgpass": b"*:*:*:*:x\n",
            "app/clean.py": b"import os\npassword = os.environ['PGPASSWORD']\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            layer.addfile(info, io.BytesIO(content))
    found = scan_layer(buffer.getvalue(), SECRET_TEXT)
    assert any(f.startswith("app/key.pem") for f in found)
    assert any(f.startswith("app/run.sh") for f in found)
    assert "tmp/.pgpass" in found
    assert not any(f.startswith("app/clean.py") for f in found)
