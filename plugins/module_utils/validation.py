# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the modules and the inventory plugin, run before any API call.

Each checker returns a list of messages (empty when the value is fine). Messages name the
option and never echo a value that may be secret (API keys, SSH key material).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import math
import re
import struct

# vast.ai offers carry a few TB of disk at most; 16384 GB (16 TB) is far above any real need
# and keeps a typo such as 1e9 from renting a host whose storage alone costs hundreds of $/h
# (storage_cost is $/GB/month: at $0.2, 16384 GB is ~$4.55/h before the GPU).
MAX_DISK_GB = 16384
# exact_count creates that many rentals in one task: above this, raise max_exact_count on purpose.
DEFAULT_MAX_EXACT_COUNT = 20

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_PORT = re.compile(r"^([0-9]{1,5})(?:/(tcp|udp))?$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def non_finite(value, path):
    """Paths (``a.b[2]``) under ``value`` that hold NaN or an infinity (any nesting)."""
    out = []
    if isinstance(value, float) and not math.isfinite(value):
        out.append(path)
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            out.extend(non_finite(value[k], "%s.%s" % (path, k) if path else str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.extend(non_finite(v, "%s[%d]" % (path, i)))
    return out


def finite_errors(params, argument_spec, prefix=""):
    """NaN and infinity in any option: ``float`` options (Ansible turns "nan", "inf" and
    "1e400" into them) and numbers nested in dict/list options such as a raw ``query``.

    Every comparison with NaN is false, so a NaN that got through would switch a guard off
    (``price > max_dph`` never true) instead of failing it."""
    errors = []
    for name in sorted(argument_spec):
        value = (params or {}).get(name)
        if value is None:
            continue
        opt = argument_spec[name] or {}
        where = prefix + name
        if opt.get("type") == "float" and isinstance(value, float):
            if math.isnan(value):
                errors.append("%s must be a number, not NaN" % where)
            elif math.isinf(value):
                errors.append("%s must be a finite number, not %s" % (where, "infinity" if value > 0 else "-infinity"))
        elif opt.get("options") and isinstance(value, dict):
            errors.extend(finite_errors(value, opt["options"], prefix=where + "."))
        elif isinstance(value, (dict, list)):
            for path in non_finite(value, ""):
                errors.append("%s holds NaN or infinity at %s" % (where, path or "(value)"))
    return errors


def port_errors(ports, name="ports"):
    errors = []
    for port in ports or []:
        m = _PORT.match(str(port).strip())
        if not m or not 1 <= int(m.group(1)) <= 65535:
            errors.append("%s entry %r is not PORT or PORT/tcp|udp with PORT between 1 and 65535" % (name, port))
    return errors


def image_errors(image, name="image"):
    """A Docker image reference: non-empty, no whitespace or control characters, no leading '-'."""
    if image is None:
        return []
    text = str(image)
    if not text.strip():
        return ["%s must not be empty" % name]
    if any(c.isspace() for c in text):
        return ["%s %r must not contain spaces (an image reference is name[:tag][@digest])" % (name, text[:100])]
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return ["%s must not contain control characters" % name]
    if text.startswith("-"):
        return ["%s %r must not start with '-'" % (name, text[:100])]
    if len(text) > 1024:
        return ["%s is %d characters long; an image reference is far shorter" % (name, len(text))]
    return []


def ssh_public_key_problem(text):
    """Why ``text`` is not an OpenSSH public key line (``type base64 [comment]``), or None.

    The blob must decode and name the same key type as the line (an RSA blob under an
    ``ssh-ed25519`` prefix is a broken key). The key itself is never quoted."""
    if not isinstance(text, str) or not text.strip():
        return "it is empty"
    if "PRIVATE KEY" in text:
        return "it is a private key; give the public key (the .pub file)"
    if "\n" in text.strip() or "\r" in text:
        return "it spans several lines; one key per entry"
    fields = text.split()
    if len(fields) < 2:
        return "it has no base64 part (expected 'TYPE BASE64 [comment]')"
    kind, blob = fields[0], fields[1]
    if kind not in SSH_KEY_TYPES:
        return "unknown key type %r (expected one of %s)" % (kind[:40], ", ".join(SSH_KEY_TYPES))
    if not _BASE64.match(blob) or len(blob) % 4:
        return "its %s key data is not base64" % kind
    try:
        raw = base64.b64decode(blob.encode("ascii"))
    except (binascii.Error, ValueError, TypeError):
        return "its %s key data is not base64" % kind
    if len(raw) < 4:
        return "its %s key data is too short" % kind
    (size,) = struct.unpack(">I", raw[:4])
    if size > len(raw) - 4 or size > 64:
        return "its %s key data is not an SSH public key blob" % kind
    inner = raw[4:4 + size]
    if inner != kind.encode("ascii"):
        return "its key data is a %r key, not %s" % (inner.decode("ascii", "replace")[:40], kind)
    if len(raw) - 4 - size < 4:
        return "its %s key data holds no key" % kind
    return None


def ssh_key_errors(keys, name="ssh_keys"):
    errors = []
    for i, key in enumerate(keys or []):
        problem = ssh_public_key_problem(key)
        if problem:
            errors.append("%s entry %d is not an OpenSSH public key: %s" % (name, i + 1, problem))
    return errors


def api_key_problem(key):
    """Why an API key (already stripped of surrounding whitespace) cannot be sent, or None.

    vast.ai keys are hex; anything with inner whitespace or outside printable ASCII would
    make requests/http.client fail with a message that quotes the header value."""
    if not key:
        return "it is empty"
    if any(c.isspace() for c in key):
        return "it contains whitespace inside it (a key is one word; check the file or variable it comes from)"
    if any(not 33 <= ord(c) <= 126 for c in key):
        return "it contains characters other than printable ASCII"
    return None


def clean_api_key(key):
    """(stripped key, problem or None). Surrounding whitespace (a key read from a file ends in
    a newline) is dropped; what remains is checked by ``api_key_problem``."""
    if key is None:
        return None, "it is empty"
    text = key if isinstance(key, str) else str(key)
    text = text.strip()
    return text, api_key_problem(text)


def range_error(name, value, low=None, high=None, unit=""):
    """One message when a number is outside [low, high] (None bounds are open)."""
    if value is None or not _is_number(value):
        return []
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            return ["%s must be between %s and %s%s, not %s" % (name, low, high, unit, value)]
        if low is not None:
            return ["%s must be at least %s%s, not %s" % (name, low, unit, value)]
        return ["%s must be at most %s%s, not %s" % (name, high, unit, value)]
    return []
