# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one HTTP client for the vast.ai REST API (modules and the inventory plugin).

Facts about the API (paths, trailing slashes, error shapes) live here and nowhere else.
Reads are retried by urllib3 ``Retry``; mutations are never retried blindly: only a 429
(the server refused the call, nothing happened) is tried again, everything else is left
to the caller to reconcile (look the instance up by label).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import logging
import math
import os
import re
import threading
import traceback

try:
    from urllib.parse import quote, quote_plus
except ImportError:  # pragma: no cover - python 2
    from urllib import quote, quote_plus  # type: ignore

try:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised by ansible-test import sanity
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.llmops.vastai.plugins.module_utils.poll import attempts
from ansible_collections.llmops.vastai.plugins.module_utils.validation import clean_api_key

try:
    from concurrent.futures import ThreadPoolExecutor
except ImportError:  # pragma: no cover
    ThreadPoolExecutor = None

DEFAULT_API_URL = "https://console.vast.ai"
# Instance row fields that must never leave the collection (restricted keys, tokens, logins).
SECRET_ROW_FIELDS = frozenset(("instance_api_key", "jupyter_token", "api_key", "image_login", "ssh_key"))
USER_AGENT = "llmops.vastai/0.1.0"
PAGE_LIMIT = 25  # v1 instance list: the server never returns more rows per page
# Reads are retried on these (a sporadic 500 from a GET is as passing as a 502); mutations never are.
RETRY_STATUSES = (429, 500, 502, 503, 504)


class VastError(Exception):
    """Base error: ``status`` (HTTP status or None), ``code`` (API error code), ``msg``."""

    def __init__(self, msg, status=None, code=None, body=None):
        super(VastError, self).__init__(msg)
        self.msg = msg
        self.status = status
        self.code = code
        self.body = body
        # An error answer to a create can still name an instance it made (an insufficient bid
        # creates it stopped and answers an error with its id: dstack PR #4036). It bills.
        self.new_contract = _contract_id(body)

    def to_dict(self):
        out = {"status": self.status, "code": self.code, "msg": self.msg}
        if self.new_contract is not None:
            out["new_contract"] = self.new_contract
        return out

    @property
    def transient(self):
        """It may pass: no answer, a 5xx, or a rate limit (worth polling on through it)."""
        return isinstance(self, (VastConnectionError, VastRateLimitError)) or (self.status or 0) >= 500

    @property
    def may_have_happened(self):
        """A mutation whose answer this is may have been performed anyway (transport error or 5xx)."""
        return isinstance(self, VastConnectionError) or (self.status or 0) >= 500

    @property
    def refused(self):
        """The server refused the call outright (4xx, 429 included): nothing was done."""
        return self.status is not None and 400 <= self.status < 500

    def __str__(self):
        parts = []
        if self.status is not None:
            parts.append("HTTP %s" % self.status)
        if self.code:
            parts.append(str(self.code))
        prefix = " ".join(parts)
        return "%s: %s" % (prefix, self.msg) if prefix else str(self.msg)


class VastAuthError(VastError):
    pass


class VastNotFoundError(VastError):
    pass


class VastOfferUnavailableError(VastError):
    pass


class VastRateLimitError(VastError):
    pass


class VastApiError(VastError):
    pass


class VastConnectionError(VastError):
    pass


class VastTeamKeyError(VastApiError):
    """A team-scoped API key cannot manage account SSH keys (400 team_ssh_keys_not_supported)."""


TEAM_KEY_HINT = (
    "this API key is team-scoped, and vast.ai keeps account SSH keys only in a personal context "
    "(400 team_ssh_keys_not_supported). VM instances take their SSH keys from the account only, "
    "so renting a VM needs a personal API key (or add the key once in the console's personal "
    "context); containers can get keys per instance instead (POST /instances/{id}/ssh/)."
)


def _contract_id(body):
    if not isinstance(body, dict):
        return None
    value = body.get("new_contract")
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def key_text(row):
    """The public key of an account key row, whichever field carries it.

    Live list rows carry it in ``ssh_key`` (Terraform provider, validated against the API),
    create answers in ``public_key``; older shapes used ``key``.
    """
    if isinstance(row, str):
        return row.strip()
    if not isinstance(row, dict):
        return ""
    for field in ("ssh_key", "public_key", "key"):
        value = row.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def whole_seconds(start, end):
    """A billing window as whole epoch seconds (what the official client sends): the start
    rounded down and the end rounded up, so the window never shrinks."""
    return int(math.floor(float(start))), int(math.ceil(float(end)))


def encode_query(params):
    """Query values as the official client sends them: strings as-is, the rest as JSON."""
    out = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return out


def secret_forms(secret):
    """Every spelling of ``secret`` that may end up in a message: raw, stripped, repr-escaped
    (requests quotes an invalid header value with repr), URL-encoded and JSON-escaped."""
    if not secret:
        return []
    secret = secret if isinstance(secret, str) else str(secret)
    forms = set()
    for s in (secret, secret.strip()):
        if not s:
            continue
        forms.add(s)
        forms.add(repr(s)[1:-1])
        forms.add(json.dumps(s)[1:-1])
        forms.add(json.dumps(s, ensure_ascii=False)[1:-1])
        forms.add(quote(s, safe=""))
        forms.add(quote_plus(s, safe=""))
        forms.add(quote(s))
    # longest first, so a longer form is replaced before a shorter one it contains; the key
    # itself always, derived forms only when long enough not to blank unrelated text
    keep = set(f for f in forms if len(f) >= 4) | set(f for f in (secret, secret.strip()) if f)
    return sorted(keep, key=len, reverse=True)


def _redact(text, secret):
    if not text or not secret:
        return text
    text = text if isinstance(text, str) else str(text)
    for form in secret_forms(secret):
        text = text.replace(form, "***")
    return text


class _RedactingLogFilter(logging.Filter):
    """Redacts API keys from urllib3/requests log records. urllib3 logs every retry with the
    request URL ("Retrying (...) after connection broken by ...: /path?query"); in the
    controller (inventory plugin) Ansible writes such records to its log file."""

    def __init__(self):
        super(_RedactingLogFilter, self).__init__()
        self.secrets = set()

    def filter(self, record):
        if not self.secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # pylint: disable=broad-except
            return True
        clean = text
        for secret in list(self.secrets):
            clean = _redact(clean, secret)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_LOG_FILTER = _RedactingLogFilter()
_HTTP_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                 "urllib3.response", "urllib3.util.retry", "requests")


def _guard_logs(secret):
    _LOG_FILTER.secrets.add(secret)
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


def error_from_response(status, body, text="", secret=None):
    """Map an error answer (any status, or a 2xx with success:false) to a typed VastError."""
    code = None
    msg = None
    if isinstance(body, dict):
        code = body.get("error")
        msg = body.get("msg") or body.get("message") or body.get("detail")
        if not msg and code:
            msg = code
    if not msg:
        snippet = (text or "").strip()
        msg = snippet[:300] if snippet else "(no detail message supplied)"
    msg = _redact(msg, secret)
    low = "%s %s" % (code or "", msg)
    low = low.lower()
    if code == "auth_error" or (status in (401, 403) and code in (None, "auth_error")):
        cls = VastAuthError
    elif "no_such_ask" in low or status == 410 or ("is not available" in low and code == "invalid_args"):
        cls = VastOfferUnavailableError
    elif status == 429 or code in ("rate_limit_exceeded", "search_quota_exceeded"):
        cls = VastRateLimitError
    elif code == "team_ssh_keys_not_supported":
        cls = VastTeamKeyError
    elif status == 404 or code in ("not_found", "no_such_instance"):
        cls = VastNotFoundError
    else:
        cls = VastApiError
    return cls(msg, status=status, code=code, body=body if isinstance(body, dict) else None)


def account_credit(user):
    """Spendable credit in dollars from ``/users/current``: ``credit``, else ``balance``; None if unreadable."""
    user = user or {}
    value = user.get("credit")
    if value is None:
        value = user.get("balance")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_charge(row):
    """A ``/charges/`` row -> ``{instance_id, label, amount, gpu, storage, gpu_hours, start, end}``.

    The instance is named by ``source`` (``instance-<id>``) or ``metadata.instance_id``; items typed
    ``gpu`` carry the hours in ``quantity`` (or their description, "N hours ..."), ``disk`` storage."""
    def num(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0
    meta = row.get("metadata") or {}
    m = re.match(r"^instance-(\d+)$", str(row.get("source") or ""))
    iid = int(m.group(1)) if m else (int(meta["instance_id"]) if meta.get("instance_id") is not None else None)
    out = dict(instance_id=iid, label=meta.get("label"), amount=num(row.get("amount")), gpu=0.0, storage=0.0,
               gpu_hours=0.0, start=row.get("start"), end=row.get("end"))
    for item in row.get("items") or []:
        amount = num(item.get("amount"))
        if item.get("type") == "gpu":
            out["gpu"] += amount
            hours = num(item.get("quantity"))
            if not hours:
                h = re.match(r"^\s*([\d.]+) hours", str(item.get("description") or ""))
                hours = float(h.group(1)) if h else 0.0
            out["gpu_hours"] += hours
        elif item.get("type") == "disk":
            out["storage"] += amount
    return out


def api_now(rows):
    """The API's clock from instance rows: ``start_date + duration`` (both in seconds, as of the
    answer) of any row that carries both; the latest one wins. None when no row does."""
    stamps = []
    for row in rows or []:
        try:
            stamps.append(float(row["start_date"]) + float(row["duration"]))
        except (KeyError, TypeError, ValueError):
            continue
    return max(stamps) if stamps else None


def describe_error(exc, retries=None):
    """What a person reads for an API error: what happened and what to do."""
    if isinstance(exc, VastAuthError):
        return "authentication failed: vast.ai rejected the API key (%s); check api_key / VAST_API_KEY" % exc.msg
    if isinstance(exc, VastRateLimitError):
        return "rate limited by vast.ai after %s retries (%s); try again later or raise api_retries" % (
            retries, exc.msg)
    if isinstance(exc, VastConnectionError):
        return "cannot talk to the vast.ai API: %s" % exc.msg
    return "vast.ai API error: %s" % exc


# The wire encoding of a create (PUT /asks/{id}/): the official client and dstack agree on
# ports as env keys `-p N:N[/proto]` and on these runtype strings.
RUNTYPES = {"ssh_direct": "ssh_direc ssh_proxy", "ssh_proxy": "ssh_proxy", "args": "args"}


def create_body(image=None, disk_gb=10, label=None, env=None, ports=(), onstart=None, bid_price=None,
                cancel_unavail=None, target_state=None, template_hash=None, runtype="ssh_direct", args=None,
                image_login=None, vm=False):
    """The JSON body of a create from typed arguments (``ports`` as ``"8000"`` / ``"8000/udp"``)."""
    env = dict((str(k), str(v)) for k, v in (env or {}).items())
    for port in ports or ():
        num, _sep, proto = str(port).partition("/")
        env["-p %s:%s%s" % (num, num, "/" + proto if proto else "")] = "1"
    body = dict(image=image, disk=float(disk_gb), label=label, env=env, onstart=onstart)
    # Sent only when set: no live-tested client sends target_state, and a bid rental goes without
    # cancel_unavail unless asked (docs/vast-api-notes.md).
    for key, value in (("price", bid_price), ("cancel_unavail", cancel_unavail), ("target_state", target_state)):
        if value is not None:
            body[key] = value
    if template_hash:
        body["template_hash_id"] = template_hash
    else:
        body["runtype"] = RUNTYPES[runtype]
    if args:
        body["args"] = list(args)
    if image_login:
        body["image_login"] = image_login
    if vm:
        body["vm"] = True
    return body


class VastClient(object):
    """Thin, typed wrapper over the vast.ai REST API.

    One ``requests.Session``; two adapters mounted on it so that only safe reads are
    retried: GET everywhere, and POST only under ``/api/v0/bundles/`` (offer search).
    """

    def __init__(self, api_key, api_url=None, timeout=30, retries=5, backoff=0.5):
        if not HAS_REQUESTS:
            raise VastError("the 'requests' Python library is required")
        if not api_key or not str(api_key).strip():
            raise VastAuthError("no API key: set api_key or the VAST_API_KEY environment variable")
        # A key read from a file ends in a newline: drop surrounding whitespace. What is left
        # must be sendable as a header value; the message never holds the key.
        self._raw_key = api_key
        api_key, problem = clean_api_key(api_key)
        if problem:
            raise VastAuthError("the API key cannot be used: %s" % problem)
        self._api_key = api_key
        _guard_logs(api_key)
        self.api_url = (api_url or os.environ.get("VAST_URL") or DEFAULT_API_URL).rstrip("/")
        if timeout is not None and timeout <= 0:
            # requests would fail later with "Attempted to set connect timeout to ..."
            raise VastError("timeout must be a positive number of seconds, not %r" % (timeout,))
        retries = max(0, int(retries or 0))  # a negative count must not leave zero attempts
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.calls = 0  # API requests issued by this client (benchmarks count them)
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        common = dict(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=3,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=30,
            backoff_jitter=backoff / 2.0 if backoff else 0.0,
            raise_on_status=False,  # the last answer is mapped to a typed error below
            respect_retry_after_header=True,
            retry_after_max=60,
        )
        reads = Retry(allowed_methods=frozenset(["GET"]), **common)
        search = Retry(allowed_methods=frozenset(["GET", "POST"]), **common)
        pool = 16
        self.session.mount(self.api_url + "/", HTTPAdapter(max_retries=reads, pool_maxsize=pool))
        self.session.mount(self.api_url + "/api/v0/bundles", HTTPAdapter(max_retries=search, pool_maxsize=pool))

    # ------------------------------------------------------------------ transport
    def url(self, path):
        if not path.startswith("/api/v"):
            path = "/api/v0" + path
        return self.api_url + path

    def _headers(self):
        # The key goes only into this header: never the URL, never the session defaults
        # (so unauthenticated fetches such as log result URLs never carry it).
        return {"Authorization": "Bearer %s" % self._api_key, "Accept": "application/json"}

    def request(self, method, path, params=None, body=None, retry_429=None):
        """One API call; returns the decoded JSON (dict/list) or raises a VastError."""
        method = method.upper()
        if body is None and method in ("POST", "PUT", "DELETE"):
            body = {}  # the official client always sends a JSON body on these
        # urllib3 already retries reads; mutations are re-sent only after a 429, which
        # means the server refused them and nothing was done.
        retry = retry_429 if retry_429 is not None else method != "GET"
        tries = 1 + (max(0, int(self.retries or 0)) if retry and method != "GET" else 0)  # at least one
        for attempt in attempts(tries=tries, delay=min(max(self.backoff, 0.05), 30), factor=2, cap=30):
            resp = self._send(method, path, params, body)
            if resp.status_code != 429 or attempt + 1 >= tries:
                return self._decode(resp)

    def _send(self, method, path, params, body):
        with self._lock:
            self.calls += 1
        # Errors from requests/urllib3 may quote request headers (an invalid header value is
        # shown with repr), so every message is redacted and raised ``from None``: the original
        # exception, which a traceback would print, is not chained to ours.
        try:
            return self.session.request(
                method,
                self.url(path),
                params=encode_query(params),
                json=body,
                headers=self._headers(),
                timeout=self.timeout,
            )
        except requests.exceptions.InvalidHeader:
            err = VastConnectionError("request %s %s not sent: a request header (the API key) is not a valid "
                                      "HTTP header value" % (method, path))
        except requests.exceptions.RetryError as e:  # pragma: no cover - raise_on_status=False
            err = VastConnectionError(self._safe("retries exhausted: %s" % _short(e)))
        except requests.exceptions.Timeout:
            err = VastConnectionError("request to %s %s timed out after %ss" % (method, path, self.timeout))
        except requests.exceptions.ConnectionError as e:
            err = VastConnectionError(self._safe("cannot reach %s (%s %s): %s" % (self.api_url, method, path, _short(e))))
        except requests.exceptions.RequestException as e:
            err = VastConnectionError(self._safe("request %s %s failed: %s" % (method, path, _short(e))))
        except (ValueError, UnicodeError, TypeError) as e:
            # http.client refuses a header value it cannot encode; say so without quoting it
            err = VastConnectionError("request %s %s not sent (%s): the API key or URL holds characters that "
                                      "cannot be sent over HTTP" % (method, path, type(e).__name__))
        raise err

    def _safe(self, text):
        text = _redact(text, self._api_key)
        return _redact(text, getattr(self, "_raw_key", None))

    def _decode(self, resp):
        text = resp.text
        try:
            body = resp.json() if text else {}
        except ValueError:
            body = None
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, body, text, self._api_key)
        if body is None:
            raise VastApiError(
                "the API answered HTTP %s with a body that is not JSON: %s" % (resp.status_code, self._safe(text[:200])),
                status=resp.status_code,
            )
        if isinstance(body, dict) and body.get("success") is False:
            raise error_from_response(resp.status_code, body, text, self._api_key)
        return body

    # ------------------------------------------------------------------ offers
    def search_offers(self, query):
        body = self.request("POST", "/bundles/", body=query)
        return body.get("offers") or []

    # ------------------------------------------------------------------ instances
    def _list_page(self, select_filters, after_token=None, order="asc"):
        params = {
            "select_filters": select_filters or {},
            "order_by": [{"col": "id", "dir": order}],
            "limit": PAGE_LIMIT,
        }
        if after_token:
            params["after_token"] = after_token
        return self.request("GET", "/api/v1/instances/", params=params)

    def _list_sequential(self, select_filters, first=None):
        page = first if first is not None else self._list_page(select_filters)
        rows = list(page.get("instances") or [])
        while page.get("next_token"):
            page = self._list_page(select_filters, page["next_token"])
            rows.extend(page.get("instances") or [])
        return rows

    def list_instances(self, select_filters=None, parallel=1):
        """All instances matching ``select_filters`` (server-side columns only).

        ``parallel=1`` follows ``next_token`` page after page. ``parallel>1`` reads the
        first page ascending and descending by id at once to learn the id span, splits
        the remaining span into disjoint id ranges paged concurrently, then checks the
        de-duplicated result against ``total_instances`` (sequential fallback if not).
        """
        select_filters = dict(select_filters or {})
        if parallel <= 1 or ThreadPoolExecutor is None or not _id_filter_mergeable(select_filters):
            return self._list_sequential(select_filters)
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            f_asc = pool.submit(self._list_page, select_filters, None, "asc")
            f_desc = pool.submit(self._list_page, select_filters, None, "desc")
            asc, desc = f_asc.result(), f_desc.result()
            if not asc.get("next_token"):
                return list(asc.get("instances") or [])
            total = asc.get("total_instances")
            asc_rows = asc.get("instances") or []
            desc_rows = desc.get("instances") or []
            if not asc_rows or not desc_rows or total is None:
                return self._list_sequential(select_filters, first=asc)
            low = int(asc_rows[-1]["id"]) + 1  # ids <= low-1 already read
            high = int(desc_rows[-1]["id"])  # ids >= high already read
            ranges = _split_range(low, high, parallel)
            futures = [
                pool.submit(self._list_sequential, _merge_id_range(select_filters, lo, hi)) for lo, hi in ranges
            ]
            rows = list(asc_rows) + list(desc_rows)
            for f in futures:
                rows.extend(f.result())
        seen = {}
        for row in rows:
            seen[row["id"]] = row
        if len(seen) != int(total):
            # rows were created/destroyed while paging, or ids are not integers: be correct
            return self._list_sequential(select_filters)
        return [seen[k] for k in sorted(seen)]

    def get_instance(self, instance_id):
        try:
            body = self.request("GET", "/instances/%s/" % int(instance_id), params={"owner": "me"})
        except VastNotFoundError:
            return None
        row = body.get("instances") if isinstance(body, dict) else None
        if isinstance(row, list):  # tolerate the list form
            row = row[0] if row else None
        return row or None

    def create_instance(self, offer_id, body):
        """Rent offer ``offer_id``; ``body`` from :func:`create_body`. Answers ``{"new_contract": id}``."""
        payload = {"client_id": "me"}
        payload.update(body or {})
        return self.request("PUT", "/asks/%s/" % int(offer_id), body=payload)

    def set_state(self, instance_id, state):
        return self.request("PUT", "/instances/%s/" % int(instance_id), body={"state": state})

    def set_label(self, instance_id, label):
        return self.request("PUT", "/instances/%s/" % int(instance_id), body={"label": label})

    def reboot(self, instance_id):
        return self.request("PUT", "/instances/reboot/%s/" % int(instance_id), body={})

    def destroy(self, instance_id):
        """Destroy an instance. One that is already gone is done, not an error: the API answers
        error ``no_such_instance`` (also to the loser of two racing destroys), which dstack
        treats as success (dstack PR #4030). Then ``{"success": True, "already_gone": True}``."""
        try:
            return self.request("DELETE", "/instances/%s/" % int(instance_id), body={})
        except VastNotFoundError as e:  # no_such_instance (or a plain 404)
            return {"success": True, "already_gone": True, "msg": e.msg}

    def list_by_label(self, labels):
        """Instances whose label is one of ``labels``: ``{"label": {"in": [...]}}`` as the
        official CLI filters labels (one call for many labels)."""
        labels = [str(x) for x in (labels or []) if x is not None]
        if not labels:
            return []
        return self.list_instances({"label": {"in": labels}})

    def attach_ssh_key(self, instance_id, key):
        return self.request("POST", "/instances/%s/ssh/" % int(instance_id), body={"ssh_key": key})

    def _account_keys_call(self, method, path, body=None):
        try:
            return self.request(method, path, body=body)
        except VastTeamKeyError as e:
            raise VastTeamKeyError("%s (%s)" % (TEAM_KEY_HINT, e.msg), status=e.status, code=e.code, body=e.body)

    def account_ssh_keys(self):
        """Account keys as rows ``{"id", "public_key", ...}`` with ``public_key`` filled from
        whichever field the API used (``ssh_key`` live, ``public_key``, ``key``); the list may
        come bare (live) or as ``{"ssh_keys": [...]}``. Raises VastTeamKeyError for team keys."""
        body = self._account_keys_call("GET", "/ssh/")
        rows = body.get("ssh_keys") if isinstance(body, dict) else body
        if isinstance(rows, str):  # some answers carry the list JSON-encoded
            try:
                rows = json.loads(rows)
            except ValueError:
                rows = []
        out = []
        for row in rows or []:
            text = key_text(row)
            if not text:
                continue
            row = dict(row) if isinstance(row, dict) else {}
            row["public_key"] = text
            out.append(row)
        return out

    def add_account_ssh_key(self, key):
        """Add a public key to the account; returns the new row (``public_key`` filled)."""
        body = self._account_keys_call("POST", "/ssh/", body={"ssh_key": key})
        row = body.get("key") if isinstance(body, dict) and isinstance(body.get("key"), dict) else dict(body or {})
        row = dict(row)
        row["public_key"] = key_text(row) or key
        return row

    def delete_account_ssh_key(self, key_id):
        return self._account_keys_call("DELETE", "/ssh/%s/" % int(key_id), body={})

    def logs(self, instance_id, tail=50, poll_tries=30, poll_interval=0.3):
        """Last ``tail`` lines of the instance log as text ('' when unavailable)."""
        body = self.request("PUT", "/instances/request_logs/%s/" % int(instance_id), body={"tail": str(int(tail))})
        url = body.get("result_url") if isinstance(body, dict) else None
        if not url:
            return (body or {}).get("msg") or ""
        for dummy in attempts(tries=poll_tries, delay=poll_interval):
            # Result URLs are pre-signed storage links: fetched without our Authorization header.
            try:
                r = requests.get(url, timeout=self.timeout)
            except requests.exceptions.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                lines = r.text.splitlines()
                return "\n".join(lines[-int(tail):])
        return ""

    # ------------------------------------------------------------------ account and billing
    def current_user(self):
        user = self.request("GET", "/users/current")
        if isinstance(user, dict):
            user = dict(user)
            user.pop("api_key", None)  # never hand the key on
        return user

    def _paged_v1(self, path, params, key="results", limit=100):
        params = dict(params)
        params["limit"] = limit
        rows = []
        while True:
            page = self.request("GET", path, params=params)
            rows.extend(page.get(key) or [])
            token = page.get("next_token")
            if not token:
                return rows
            params["after_token"] = token

    def charges(self, start, end):
        start, end = whole_seconds(start, end)  # the official client sends whole seconds
        return self._paged_v1(
            "/charges/", {"select_filters": {"day": {"gte": start, "lte": end}}, "latest_first": False}, limit=500
        )

    def invoices(self, start, end):
        start, end = whole_seconds(start, end)
        return self._paged_v1(
            "/api/v1/invoices/", {"select_filters": {"when": {"gte": start, "lte": end}}, "latest_first": False}
        )


def _short(exc):
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _id_filter_mergeable(select_filters):
    idf = select_filters.get("id")
    if idf is None:
        return True
    return isinstance(idf, dict) and set(idf) <= set(["gte", "gt", "lte", "lt"])


def _merge_id_range(select_filters, lo, hi):
    """Caller filters plus ``lo <= id < hi``, keeping any tighter bound the caller set."""
    merged = dict(select_filters)
    idf = dict(merged.get("id") or {})
    if "gt" in idf:
        lo = max(lo, int(idf.pop("gt")) + 1)
    if "gte" in idf:
        lo = max(lo, int(idf.pop("gte")))
    if "lte" in idf:
        hi = min(hi, int(idf.pop("lte")) + 1)
    if "lt" in idf:
        hi = min(hi, int(idf.pop("lt")))
    idf["gte"] = lo
    idf["lt"] = hi
    merged["id"] = idf
    return merged


def _split_range(low, high, parts):
    """``parts`` disjoint half-open ranges covering [low, high)."""
    if high <= low:
        return []
    span = high - low
    parts = max(1, min(parts, span))
    step = span // parts
    out = []
    lo = low
    for i in range(parts):
        hi = high if i == parts - 1 else lo + step
        out.append((lo, hi))
        lo = hi
    return out
