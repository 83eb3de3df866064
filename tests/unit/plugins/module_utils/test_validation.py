"""Shared input checks (plugins/module_utils/validation.py) and the client's redaction."""
import base64
import json
import math
import os
import struct
from urllib.parse import quote, quote_plus

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import validation as v
from ansible_collections.llmops.vastai.plugins.module_utils.client import VastAuthError, VastClient, _redact
from ansible_collections.llmops.vastai.plugins.module_utils.query import OFFER_FILTER_SPEC


def _string(b):
    return struct.pack(">I", len(b)) + b


def pubkey(kind="ssh-ed25519", inner=None, comment="me@host"):
    inner = kind if inner is None else inner
    blob = _string(inner.encode()) + _string(os.urandom(32))
    return "%s %s %s" % (kind, base64.b64encode(blob).decode(), comment)


SPEC = dict(disk_gb=dict(type="float"), name=dict(type="str"), offer_filters=dict(type="dict", options=OFFER_FILTER_SPEC),
            env=dict(type="dict"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), float("1e400")])
def test_non_finite_floats_refused_at_every_level(value):
    assert v.finite_errors({"disk_gb": value}, SPEC) and "disk_gb" in v.finite_errors({"disk_gb": value}, SPEC)[0]
    errs = v.finite_errors({"offer_filters": {"max_dph": value}}, SPEC)
    assert errs == [errs[0]] and errs[0].startswith("offer_filters.max_dph")
    errs = v.finite_errors({"offer_filters": {"query": {"dph_total": {"lte": value}}}}, SPEC)
    assert errs and "offer_filters.query" in errs[0] and "dph_total.lte" in errs[0]
    assert v.finite_errors({"env": {"A": [1, value]}}, SPEC) == ["env holds NaN or infinity at A[1]"]


def test_finite_values_pass():
    assert v.finite_errors({"disk_gb": 1e300, "name": "nan", "offer_filters": {"max_dph": 0.5, "query": {"x": 1}}},
                           SPEC) == []


@pytest.mark.parametrize("port,ok", [("8000", True), ("1", True), ("65535/udp", True), ("22/tcp", True),
                                     ("0", False), ("65536", False), ("99999", False), ("80/sctp", False),
                                     ("http", False), ("", False), ("-1", False), ("8000/", False), ("8 000", False)])
def test_ports(port, ok):
    assert (v.port_errors([port]) == []) is ok


@pytest.mark.parametrize("image,ok", [("vllm/vllm-openai:v0.33.0", True), ("ghcr.io/a/b@sha256:" + "a" * 64, True),
                                      ("", False), ("   ", False), ("vllm/vllm openai", False), ("img\n", False),
                                      ("-it", False), ("a\x00b", False), ("x" * 2000, False)])
def test_images(image, ok):
    assert (v.image_errors(image) == []) is ok


def test_ssh_keys_parsed():
    for kind in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"):
        assert v.ssh_key_errors([pubkey(kind)]) == []
    assert v.ssh_key_errors([pubkey(comment="")]) == []
    bad = {
        "": "empty",
        "ssh-ed25519": "no base64",
        "ssh-ed25519 !!!notbase64": "not base64",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI": "not base64",   # truncated (not a multiple of 4)
        pubkey("ssh-ed25519", inner="ssh-rsa"): "'ssh-rsa' key, not ssh-ed25519",
        "ssh-foo " + base64.b64encode(b"x" * 20).decode(): "unknown key type",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----": "private",
        "ssh-ed25519 " + base64.b64encode(_string(b"ssh-ed25519")).decode(): "holds no key",
    }
    for key, words in bad.items():
        errs = v.ssh_key_errors(["ssh-ed25519 " + base64.b64encode(_string(b"ssh-ed25519") + _string(b"k" * 32))
                                 .decode(), key])
        assert len(errs) == 1 and errs[0].startswith("ssh_keys entry 2") and words in errs[0], (key, errs)
        if "PRIVATE" in key:
            assert "b3BlbnNzaC1rZXktdjEAAAAA" not in errs[0]


def test_api_key_cleaning():
    assert v.clean_api_key("abc123\n") == ("abc123", None)
    assert v.clean_api_key("  abc123 \r\n") == ("abc123", None)
    key, problem = v.clean_api_key("abc 123")
    assert problem and "abc" not in problem and "123" not in problem
    assert v.clean_api_key("ab\u2019c")[1]
    assert v.clean_api_key("\n")[1] == "it is empty"


def test_client_strips_and_refuses_without_quoting_the_key():
    c = VastClient("deadbeef1234\n", api_url="http://127.0.0.1:9")
    assert c._api_key == "deadbeef1234" and c._headers()["Authorization"] == "Bearer deadbeef1234"
    with pytest.raises(VastAuthError) as e:
        VastClient("dead beef1234", api_url="http://127.0.0.1:9")
    assert "dead" not in str(e.value) and "beef1234" not in str(e.value)


def test_redact_every_form():
    key = 'k3y/+&=%"\\\u00e9-SECRET'
    forms = [key, repr(key)[1:-1], json.dumps(key)[1:-1], quote(key, safe=""), quote_plus(key), quote(key),
             "'Bearer %s\\n'" % key]
    for form in forms:
        out = _redact("header value %s end" % form, key + "\n")
        assert "SECRET" not in out and out.startswith("header value ") and out.endswith(" end"), (form, out)
    assert _redact("nothing here", key) == "nothing here"
    assert math.isfinite(1.0)


def test_urllib3_log_records_are_redacted(caplog):
    """urllib3 logs retries with the URL; a key there (e.g. a mistaken api_url) is redacted."""
    import logging
    key = "LOGKEY-" + os.urandom(8).hex()
    VastClient(key + "\n", api_url="http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        logging.getLogger("urllib3.connectionpool").warning("Retrying (%r) after connection broken by %r: %s",
                                                            "Retry(total=1)", "refused", "/%s/api/v1/" % key)
    assert caplog.records and key not in caplog.text and "/***/api/v1/" in caplog.text


def test_redact_short_key_still_redacted():
    assert _redact("key abc in text", "abc") == "key *** in text"
