"""Secret audit (issue 6, part 3): modules and playbooks at -vvv with distinctive secrets
(vast.ai key, a wrong vast.ai key, HF token, vLLM API key, registry password); no secret may
appear in stdout/stderr, the Ansible log, the audit trail, the simulator's request URLs or any
file on the controller other than the endpoint's 0600 token file.

`make test`: the module-level audit; `make faults` (marker `faults`): every playbook that works
with `--hosts none` (provision in container mode without deploy, power_off, power_on,
idle_shutdown --check, cost_report, teardown).
"""
import io
import shutil

import pytest

from tests.campaigns import secrets


def audit(full, capsys):
    buf = io.StringIO()
    a = secrets.Audit(full=full, out=buf).go()
    with capsys.disabled():
        print(buf.getvalue())
    assert a.runs and all(rc == 0 for _, rc, _ in a.runs), "audited runs failed: %s" % a.runs
    assert a.checked["requests"] > 10 and a.checked["files"] > 0
    assert not a.findings, "secrets leaked:\n" + "\n".join("%s in %s" % ("+".join(n), w) for w, n in a.findings)
    return a


def test_secret_audit_modules(capsys):
    a = audit(False, capsys)
    shutil.rmtree(a.home.rsplit("/", 1)[0], ignore_errors=True)


@pytest.mark.faults
@pytest.mark.slow
def test_secret_audit_playbooks(capsys):
    a = audit(True, capsys)
    shutil.rmtree(a.home.rsplit("/", 1)[0], ignore_errors=True)
