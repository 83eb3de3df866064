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
import os
import threading
import time
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

from ansible_collections.llmops.vastai.plugins.module_utils.validation import clean_api_key

try:
    from concurrent.futures import ThreadPoolExecutor
except ImportError:  # pragma: no cover
    ThreadPoolExecutor = None

DEFAULT_API_URL = "https://console.vast.ai"
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

    def to_dict(self):
        return {"status": self.status, "code": self.code, "msg": self.msg}

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
    elif status == 404 or code in ("not_found", "no_such_instance"):
        cls = VastNotFoundError
    else:
        cls = VastApiError
    return cls(msg, status=status, code=code, body=body if isinstance(body, dict) else None)


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
        attempts = 1 + (max(0, int(self.retries or 0)) if retry else 0)  # always at least one
        delay = max(self.backoff, 0.05)
        attempt = 0
        while True:
            attempt += 1
            resp = self._send(method, path, params, body)
            if resp.status_code == 429 and attempt < attempts and method != "GET":
                time.sleep(min(delay, 30))
                delay *= 2
                continue
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
        return self.request("DELETE", "/instances/%s/" % int(instance_id), body={})

    def attach_ssh_key(self, instance_id, key):
        return self.request("POST", "/instances/%s/ssh/" % int(instance_id), body={"ssh_key": key})

    def account_ssh_keys(self):
        """Public keys on the account (the list may come bare or as {"ssh_keys": [...]})."""
        body = self.request("GET", "/ssh/")
        rows = body.get("ssh_keys") if isinstance(body, dict) else body
        return [r for r in (rows or []) if isinstance(r, dict)]

    def add_account_ssh_key(self, key):
        return self.request("POST", "/ssh/", body={"ssh_key": key})

    def logs(self, instance_id, tail=50, poll_tries=30, poll_interval=0.3):
        """Last ``tail`` lines of the instance log as text ('' when unavailable)."""
        body = self.request("PUT", "/instances/request_logs/%s/" % int(instance_id), body={"tail": str(int(tail))})
        url = body.get("result_url") if isinstance(body, dict) else None
        if not url:
            return (body or {}).get("msg") or ""
        for dummy in range(poll_tries):
            # Result URLs are pre-signed storage links: fetched without our Authorization header.
            try:
                r = requests.get(url, timeout=self.timeout)
            except requests.exceptions.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                lines = r.text.splitlines()
                return "\n".join(lines[-int(tail):])
            time.sleep(poll_interval)
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
        return self._paged_v1(
            "/charges/", {"select_filters": {"day": {"gte": start, "lte": end}}, "latest_first": False}, limit=500
        )

    def invoices(self, start, end):
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
