"""Secret audit (issue 6, part 3): modules and playbooks at -vvv with distinctive secrets
(vast.ai key, a wrong vast.ai key, HF token, vLLM API key, registry password); no secret may
appear in stdout/stderr, the Ansible log, the audit trail, the simulator's request URLs, any
file on the controller other than the endpoint's 0600 token file, or any file, command line or
journal entry on the instance other than the stack's own 0600 secret files.

`make test`: the module-level audit and the playbooks on a real container host (provision with
deploy, deploy, idle_shutdown over SSH, power off/on, cost report, teardown); `make faults`
(marker `faults`) adds every playbook on a `--hosts none` simulator (container mode included).
"""
import io
import shutil

import pytest

from tests.campaigns import secrets
from tests.helpers import images


def audit(capsys, **kw):
    buf = io.StringIO()
    a = secrets.Audit(out=buf, **kw).go()
    with capsys.disabled():
        print(buf.getvalue())
    assert a.runs and not a.bad_runs(), "audited runs did not end as they must: %s" % a.bad_runs()
    assert a.checked["requests"] > 10 and a.checked["files"] > 0
    assert not a.findings, "secrets leaked:\n" + "\n".join("%s in %s" % ("+".join(n), w) for w, n in a.findings)
    shutil.rmtree(a.home.rsplit("/", 1)[0], ignore_errors=True)
    return a


def test_secret_audit_modules(capsys):
    audit(capsys)


@pytest.mark.timeout(1800)
@pytest.mark.skipif(not images.have_docker_cli(), reason="docker CLI missing (make host-deps)")
def test_secret_audit_docker_hosts(capsys):
    a = audit(capsys, docker=True)
    # the scan really read the instance: the stack's secret files are where it found the secrets
    found = {h["path"] for h in a.host_hits}
    assert found == {"/opt/llm-stack/vllm.env", "/etc/nginx/llm-proxy/auth.conf"}, found
    assert a.checked["host_files"] > 1000


@pytest.mark.faults
@pytest.mark.slow
def test_secret_audit_playbooks(capsys):
    audit(capsys, full=True)
