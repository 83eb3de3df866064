"""plugins/filter/audit.py: the playbooks' audit events in the modules' format."""
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.vastai.plugins.filter import audit
from ansible_collections.llmops.vastai.plugins.module_utils.audit import append_audit


def test_actor():
    assert audit.audit_actor(None, user="alice") == "user alice"
    assert audit.audit_actor(None, user="alice", awx_job_id=17, awx_user="bob") == "awx job 17 (bob)"
    assert audit.audit_actor(None, awx_job_id="17") == "awx job 17"
    assert audit.audit_actor("ops-bot", user="alice", awx_job_id=17) == "ops-bot"
    assert audit.audit_actor(None) == "user unknown"


def test_event_line_is_the_modules_format(tmp_path):
    ev = audit.audit_event({"action": "power_off_complete", "instance_id": 7, "label": "x", "price": 0.4,
                            "figures": {"session_minutes": 61.0, "session_cost": 0.41}}, actor="user alice", now=0)
    assert ev["time"] == "1970-01-01T00:00:00Z" and ev["module"] == "playbook" and ev["actor"] == "user alice"
    path = tmp_path / "a.jsonl"
    append_audit(str(path), ev)
    assert path.read_text() == audit.audit_line(ev) + "\n"
    assert json.loads(audit.audit_line(ev))["figures"]["session_cost"] == 0.41


def test_unknown_fields_are_an_error_not_dropped():
    with pytest.raises(AnsibleFilterError, match="not audit fields: token"):
        audit.audit_event({"action": "x", "token": "secret"})
    with pytest.raises(AnsibleFilterError):
        audit.audit_event({"label": "no action"})


def test_tail():
    text = "\n".join([json.dumps({"action": "a%d" % i}) for i in range(15)] + ["garbage", ""])
    got = audit.audit_tail(text, 3)
    assert [e["action"] for e in got] == ["a12", "a13", "a14"]
    assert audit.audit_tail(text, 2, actions=["a1", "a2"]) == [{"action": "a1"}, {"action": "a2"}]
    assert audit.audit_tail("", 5) == [] and audit.audit_tail(text, 0) == []
