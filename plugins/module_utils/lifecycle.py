# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The instance lifecycle as plain Python: identity by label, the offer picker, create and
reconcile, perform-then-reread, and the waits.

Modules (``vast_instance`` today) map their arguments onto :class:`InstanceLifecycle` and turn
a :class:`Failure` into ``fail_json``; nothing here imports Ansible's module machinery, so it is
unit-tested directly against the simulator. ``params`` are the ``vast_instance`` options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import socket
import time

from ansible_collections.llmops.vastai.plugins.module_utils.audit import append_audit, audit_record
from ansible_collections.llmops.vastai.plugins.module_utils.base import account_label_prefix, represent_instance
from ansible_collections.llmops.vastai.plugins.module_utils.client import (
    VastError,
    VastOfferUnavailableError,
    account_credit,
    create_body,
    describe_error,
)
from ansible_collections.llmops.vastai.plugins.module_utils.pricing import STOPPED, account_burn, billed_dph, burn_rate, num
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import ssh_endpoint
from ansible_collections.llmops.vastai.plugins.module_utils.poll import attempts
from ansible_collections.llmops.vastai.plugins.module_utils.query import build_query, required_direct_ports, sort_offers

RECONCILE_TRIES = 5  # label look-ups after a lost create answer (lists may lag)
MUTATION_RECONCILE_TRIES = 3  # re-reads after a lost stop/start/label/destroy answer
RACE_SETTLE_TRIES = 4  # re-lists (0.5, 1, 2 s apart) while a label shows several instances


class Failure(Exception):
    """The task fails: ``msg`` for people, ``exc`` (a VastError or None), ``extra`` result keys."""

    def __init__(self, msg, exc=None, **extra):
        super(Failure, self).__init__(msg)
        self.msg = msg
        self.exc = exc
        self.extra = extra


class WaitTimeout(Exception):
    def __init__(self, row, waited):
        super(WaitTimeout, self).__init__("timeout")
        self.row = row
        self.waited = waited


class WaitFailed(Exception):
    def __init__(self, row, reason):
        super(WaitFailed, self).__init__(reason)
        self.row = row
        self.reason = reason


def key_material(text):
    """'ssh-ed25519 AAAA... comment' -> 'ssh-ed25519 AAAA...' (comments differ, keys do not)."""
    return " ".join(str(text or "").split()[:2])


def never_running(row):
    """Why a wait for running can end now, or None. Sources: dstack's vastai backend fails at once
    on actual_status 'created' with 'OCI runtime create failed' in status_msg, and when cur_state,
    intended_status and next_state are all 'stopped' (outbid, PR #4037); SkyPilot's provisioner
    treats exited, stopped, frozen, unknown and offline as terminal while provisioning. A stop
    the user asked for elsewhere ('stopped' intended) is outbid-like only with all three fields."""
    actual = row.get("actual_status")
    msg = str(row.get("status_msg") or "")
    if actual == "created" and "oci runtime create failed" in msg.lower():
        return "the container could not be created (OCI runtime create failed)"
    if row.get("cur_state") == "stopped" and row.get("intended_status") == "stopped" \
            and row.get("next_state") == "stopped":
        return "it was stopped (outbid by a higher bid, or another job stopped it: cur_state, intended_status " \
               "and next_state are all stopped)"
    if actual == "offline":
        return "the host went offline"
    if actual in ("exited", "frozen", "unknown") and row.get("intended_status") == "running":
        return "the container is %s" % actual
    return None


def scheduling(row):
    """A start waiting for its GPU: asked to run, the contract still stopped. vast.ai's UI calls it
    "Scheduling"; when another tenant rented the GPU meanwhile it can last for hours (vast docs,
    "manage instances": a restart only happens if that GPU is free; the CLI's start help says
    "stuck in scheduling"), and stopping again cancels it."""
    return row.get("intended_status") == "running" and row.get("actual_status") == "stopped" \
        and row.get("next_state") != "stopped"


def is_running(row):
    """Running and meant to stay so: vast-cli's poller waits for intended_status and actual_status
    together; a row still running while another job's stop is under way is not 'running'."""
    return row.get("actual_status") == "running" and row.get("intended_status") != "stopped"


def is_stopped(row):
    """Stopped and meant to stay so (not while another job's start is under way)."""
    return row.get("actual_status") in STOPPED and row.get("intended_status") != "running"


def overridden(row, want):
    """'; another job asked ...' when the row's intended_status is the opposite of ``want``."""
    intended = (row or {}).get("intended_status")
    if intended in ("running", "stopped") and intended != want:
        return "; another job asked for it to be %s meanwhile (intended_status %s)" % (intended, intended)
    return ""


def wait_instance(client, instance_id, done, timeout, interval, fail_fast=None):
    """Poll ``get_instance`` until ``done(row)``; WaitFailed on ``fail_fast(row)``, WaitTimeout at the end.

    A poll that fails for a passing reason (5xx, reset, rate limit once the client's own retries
    are spent) does not end the wait: the instance keeps moving, so poll on; the error is raised
    only when the deadline comes with no good answer since."""
    started = time.monotonic()
    row, error = None, None
    for dummy in attempts(timeout=timeout, delay=interval):
        try:
            row, error = client.get_instance(instance_id), None
        except VastError as e:
            if not e.transient:
                raise
            error = e
            continue
        if row is not None and done(row):
            return row
        if row is not None and fail_fast is not None:
            reason = fail_fast(row)
            if reason:
                raise WaitFailed(row, reason)
    if error is not None:
        raise error
    raise WaitTimeout(row, time.monotonic() - started)


def wait_ssh_banner(endpoints, timeout, interval=1.0):
    """The first of ``endpoints`` (tried in order each round) whose ``host:port`` accepts TCP and
    sends an SSH banner within ``timeout`` s, or None. Only a banner counts: some networks accept
    any connection. With direct then proxy, a blocked direct port (SkyPilot found direct SSH
    blocked on some hosts) ends in the proxy, the endpoint that answered."""
    deadline = time.monotonic() + timeout
    for dummy in attempts(timeout=timeout, delay=interval):
        for endpoint in endpoints:
            left = max(1.0, min(deadline - time.monotonic(), 5))
            try:
                sock = socket.create_connection((endpoint["host"], endpoint["port"]), timeout=left)
                try:
                    sock.settimeout(left)
                    if sock.recv(64).startswith(b"SSH-"):
                        return endpoint
                finally:
                    sock.close()
            except (OSError, socket.timeout):
                pass
    return None


class InstanceLifecycle(object):
    """One task's work on vast.ai instances. ``result`` collects changed/actions/diff."""

    def __init__(self, client, params, check_mode=False, module_name="vast_instance", result=None):
        self.client = client
        self.params = params
        self.check_mode = check_mode
        self.module_name = module_name
        self.result = result if result is not None else {}
        self.result.setdefault("changed", False)
        self.result["actions"] = []
        self.created_ids = []
        self.billed = {}  # instance id -> $/h its rental bills (for messages about leftovers)
        self.warnings = []
        self.differ = {}
        self.ssh_answered = {}  # instance id -> SSH endpoint that sent a banner (wait_ssh)
        self.planned = None
        self._user = None

    # ------------------------------------------------------------------ plumbing
    def fail(self, msg, exc=None, **extra):
        raise Failure(msg, exc=exc, **extra)

    def fail_vast(self, exc, doing=None, **extra):
        msg = describe_error(exc, self.params.get("api_retries"))
        self.fail("%s: %s" % (doing, msg) if doing else msg, exc=exc, **extra)

    def audit(self, action, instance_id=None, label=None, price=None, result="ok", **extra):
        if self.check_mode:
            return
        append_audit(self.params.get("audit_log"), audit_record(
            action, instance_id=instance_id, label=label, price=price, result=result,
            module=self.module_name, **extra))

    def perform(self, action, row, describe, call=None, settled=None, what=None, planned=None, detail=None,
                label=None):
        """The one step every mutation of an existing instance goes through: record the action, mark
        changed, plan the diff and, outside check mode, send it (reconciling a lost answer when
        ``settled`` is given) and write the audit line. True when a lost answer was reconciled."""
        self.result["changed"] = True
        self.result["actions"].append(describe)
        if planned is not None:
            self.planned = planned
        if self.check_mode:
            return False
        if settled is None:
            call()
            lost = False
        else:
            lost = self.mutate(action, row, call, settled, what)
        self.audit(action, instance_id=row["id"], label=label or row.get("label"), price=row.get("dph_total"),
                   result="reconciled" if lost else "ok", detail=detail)
        return lost

    def view(self, row):
        out = represent_instance(row, self.params["connect_with"])
        if out is not None and row.get("id") in self.ssh_answered:
            out["ssh"] = self.ssh_answered[row["id"]]  # the endpoint that answered (wait_ssh)
        return out

    def user(self):
        if self._user is None:
            self._user = self.client.current_user()
        return self._user

    def resolve_label(self):
        p = self.params
        if p.get("label"):
            return p["label"]
        if p.get("id") is not None or not p.get("name"):
            return None
        return "%s-%s" % (account_label_prefix(self.user()), p["name"])

    def by_label(self, label):
        return self.client.list_by_label([label])

    def settled(self, listing, several):
        """``listing()``, listed again while ``several(rows)``: a run that lost a create race
        destroys its own instance right after listing the label (settle_race), so two instances
        on one label seen once may be one a moment later. Duplicates that stay are returned."""
        for dummy in attempts(tries=RACE_SETTLE_TRIES, delay=0.5, factor=2):
            rows = listing()
            if not several(rows):
                break
        return rows

    def find(self, label):
        """(row or None) for the identity; fails when a label matches several instances."""
        if self.params.get("id") is not None:
            return self.client.get_instance(self.params["id"])
        rows = self.settled(lambda: self.by_label(label), lambda rows: len(rows) > 1)
        if len(rows) > 1:
            ids = sorted(r["id"] for r in rows)
            self.fail(
                "label %r matches %d instances (ids %s); vast.ai labels are not unique, so target one "
                "with id, or relabel/destroy the extra ones" % (label, len(rows), ", ".join(str(i) for i in ids)),
                instance_ids=ids)
        return rows[0] if rows else None

    @staticmethod
    def snapshot(row):
        if not row:
            return {"state": "absent"}
        return {"id": row.get("id"), "label": row.get("label"),
                "state": row.get("actual_status") or row.get("intended_status") or "created"}

    # ------------------------------------------------------------------ offers
    def interruptible(self):
        p = self.params
        return p["bid_price"] is not None or (p["offer_filters"] or {}).get("offer_type") == "interruptible"

    def direct_ports_needed(self):
        """Published ports and direct SSH are reachable only through the offer's direct ports."""
        p = self.params
        return required_direct_ports(p["ports"], None if p["template_hash"] else p["runtype"], p["vm"])

    def offer_filters(self, excluded):
        p = self.params
        f = dict(p["offer_filters"])
        f["exclude_machine_ids"] = sorted(set(f.get("exclude_machine_ids") or []) | excluded)
        if p["vm"]:
            f["vm_capable"] = True
        if self.interruptible():
            f["offer_type"] = "interruptible"
        if self.direct_ports_needed():
            f["min_direct_ports"] = max(f.get("min_direct_ports") or 0, self.direct_ports_needed())
        # the disk asked for must fit on the machine (search with it as a floor)
        f["min_disk_gb"] = max(f.get("min_disk_gb") or 0, float(p["disk_gb"]))
        return f

    def search(self, excluded):
        p = self.params
        f = self.offer_filters(excluded)
        query = build_query(f, allocated_storage=p["disk_gb"])
        offers = sort_offers(self.client.search_offers(query), f["order_by"])
        offers = [o for o in offers if o.get("machine_id") not in excluded]
        if p["offer_pick"] == "second" and len(offers) > 1:
            offers[0], offers[1] = offers[1], offers[0]
        return offers

    def candidates(self, excluded):
        p = self.params
        if p["offer_id"] is not None:
            if p["max_dph"] is None and p["max_total_dph"] is None and not self.interruptible():
                return [{"id": p["offer_id"]}]
            # price check needs the offer row; an offer already taken is simply not found
            query = {"id": {"eq": p["offer_id"]}, "limit": 1, "allocated_storage": float(p["disk_gb"])}
            if self.interruptible():
                query["type"] = "bid"
            found = self.client.search_offers(query)
            return found or [{"id": p["offer_id"], "_missing": True}]
        return self.search(excluded)

    def bid_for(self, offer):
        """The bid an interruptible rental sends (None for on-demand): ``bid_price``, else the
        offer's ``min_bid`` as dstack and SkyPilot do. A create without one rents on-demand at the
        on-demand price (vast-cli PR #403)."""
        if not self.interruptible():
            return None
        if self.params["bid_price"] is not None:
            return float(self.params["bid_price"])
        if offer.get("min_bid") is None:
            self.fail("offer %s has no min_bid to bid with; give bid_price" % offer["id"])
        return float(offer["min_bid"])

    def preflight(self, offer, bid):
        """Refuse, before anything is sent, a rental that would bill above what was allowed."""
        p = self.params
        if bid is not None and offer.get("min_bid") is not None and bid < float(offer["min_bid"]):
            self.fail("refusing to rent offer %s: bid_price $%.4f/h is below its min_bid $%.4f/h, so vast.ai "
                      "would refuse it (or create it stopped); raise bid_price" % (offer["id"], bid, float(offer["min_bid"])))
        price = billed_dph(offer, bid)
        caps = [("max_dph", p["max_dph"]), ("offer_filters.max_dph", (p["offer_filters"] or {}).get("max_dph"))]
        for name, cap in caps:
            if cap is not None and price > cap:
                self.fail("refusing to rent offer %s: it would bill $%.4f/h (%s) which is above %s $%.4f/h" % (
                    offer["id"], price, "bid $%.4f/h + storage" % bid if bid is not None else "on-demand incl. storage",
                    name, cap))
        self.check_budget(price)
        return price

    def check_budget(self, added, leave_out=()):
        """The account-wide guard, right before a create or a start: what everything on the account
        would bill per hour after this change (``max_total_dph``), and credit for at least
        ``min_credit_hours`` of it."""
        p = self.params
        if p["max_total_dph"] is None and p["min_credit_hours"] is None:
            return
        if self.check_mode and getattr(self, "_burn", None) is not None:
            burn = self._burn
        else:
            burn = self._burn = account_burn(self.client.list_instances(), leave_out=leave_out)
        after = burn + added
        if p["max_total_dph"] is not None and after > p["max_total_dph"]:
            self.fail("refusing: the account would bill $%.4f/h after this change ($%.4f/h now + $%.4f/h), above "
                      "max_total_dph $%.4f/h" % (after, burn, added, p["max_total_dph"]))
        if p["min_credit_hours"] is not None:
            credit = self.credit()
            if credit < after * p["min_credit_hours"]:
                self.fail("refusing: account credit $%.2f covers %.1f h of the $%.4f/h the account would bill after "
                          "this change; min_credit_hours is %s" % (
                              credit, credit / after if after else float("inf"), after, p["min_credit_hours"]))

    @staticmethod
    def active(rows):
        """Instances that count against ``max_instances``: all but the stopped ones."""
        return [r for r in rows if not (r.get("actual_status") in STOPPED and r.get("intended_status") != "running")]

    def check_count(self):
        """``max_instances`` before a create: refuse when the account already has that many active."""
        cap = self.params.get("max_instances")
        if cap is None:
            return
        active = self.active(self.client.list_instances())
        if len(active) + 1 > cap:
            self.fail("refusing to create: the account has %d active instance(s) (%s) and max_instances is %d; stop or "
                      "destroy some, or raise max_instances" % (len(active), ", ".join(
                          "%s" % (r.get("label") or r["id"]) for r in sorted(active, key=lambda r: r["id"])), cap))

    def settle_count(self, label, mine):
        """``max_instances`` after a create, for runs that passed the check together: of all active
        instances the oldest ``max_instances`` stay; ours, when younger, is destroyed and the task fails."""
        cap = self.params.get("max_instances")
        if cap is None:
            return
        try:
            active = sorted(self.active(self.client.list_instances()), key=lambda r: int(r["id"]))
        except VastError:
            return  # unknown: a racing run that can read applies the rule
        over = [r["id"] for r in active[cap:]]
        if mine in over:
            self.fail("max_instances %d was reached by a concurrent run while renting %r (active: %s)%s" % (
                cap, label, ", ".join(str(r["id"]) for r in active), self.leftover(mine, label, always=True)),
                instance_id=mine, changed=True)

    def credit(self):
        credit = account_credit(self.user())
        if credit is None:
            self.fail("cannot read the account credit to check the budget (min_credit, min_credit_hours)")
        return credit

    def check_credit(self):
        p = self.params
        if p["min_credit"] is None:
            return
        credit = self.credit()
        if credit < p["min_credit"]:
            self.fail("refusing to create: account credit $%.2f is below min_credit $%.2f" % (
                credit, p["min_credit"]))

    # ------------------------------------------------------------------ create
    def creation_body(self, label, bid):
        p = self.params
        env = dict(p["env"])
        env.update(p["secret_env"])
        cancel = p["cancel_unavail"]
        if cancel is None:
            cancel = None if bid is not None else True  # the CLI's default for bids is false: send none
        return create_body(
            image=p["image"], disk_gb=p["disk_gb"], label=label, env=env, ports=p["ports"],
            onstart=p["onstart"], bid_price=bid, cancel_unavail=cancel,
            template_hash=p["template_hash"], runtype=p["runtype"], args=p["args"],
            image_login=p["image_login"], vm=p["vm"])

    def reconcile(self, label, offer_id, cause):
        """After a create error the instance may exist anyway (lost answer): look the label up
        again, riding out lagging lists and error storms. One -> adopt it; several -> the race
        rule (:meth:`settle_race`) keeps the oldest."""
        last = None
        step = min(1.0, self.params["poll_interval"])
        for dummy in attempts(tries=RECONCILE_TRIES, delay=step, factor=2, cap=8 * step):
            try:
                rows, last = self.by_label(label), None
            except VastError as e:
                last = e
                continue
            if rows:
                return self.settle_race(label, None, rows)
        if last is not None:
            self.result["changed"] = True  # it may have happened
            self.fail("renting offer %s for %r failed (%s) and looking the label up again failed too (%s): an "
                      "instance may have been rented and cost money; run the task again (it adopts the instance "
                      "by label) or check vast_instance_info label=%s" % (offer_id, label, cause.msg, last.msg, label),
                      exc=last)
        return None

    def settle_race(self, label, mine, rows=None):
        """At most one instance per label with no server-side lock: after a create, list the label
        again; when several carry it, the oldest (lowest id) wins, by a rule every racing run
        computes alike. A run whose own instance lost destroys it and adopts the winner. ``mine``
        None (the create answer was lost, so which one is ours is unknown): every younger one is
        destroyed, as its own run would do. Returns the row this task ends with."""
        if rows is None:
            try:
                rows = self.by_label(label)
            except VastError:
                return None  # unknown: keep ours; a racing run that sees both applies the rule
        rows = [r for r in rows if r.get("label") == label]
        if mine is not None and mine not in [r["id"] for r in rows]:
            rows.append({"id": mine, "label": label})  # a list that lags behind our own create
        if len(rows) <= 1:
            return rows[0] if rows else None
        rows.sort(key=lambda r: int(r["id"]))
        winner = rows[0]
        losers = [r for r in rows[1:] if mine is None or r["id"] == mine]
        for r in losers:
            self.client.destroy(r["id"])
            if r["id"] in self.created_ids:
                self.created_ids.remove(r["id"])
            self.result["actions"].append("label %r was rented concurrently; instance %s (oldest) wins, destroyed %s"
                                          % (label, winner["id"], r["id"]))
            self.audit("destroy", instance_id=r["id"], label=label, price=r.get("dph_total"),
                       detail="lost create race to %s" % winner["id"])
        if mine is not None and winner["id"] != mine and not winner.get("actual_status"):
            winner = self.client.get_instance(winner["id"]) or winner
        return winner

    def leftover(self, instance_id, label, always=False):
        """An instance this task created that will not serve: destroy it when destroy_on_failure is
        set (or ``always``), else name it with what it bills."""
        self.result["changed"] = True
        row = None
        try:
            row = self.client.get_instance(instance_id)
        except VastError:
            pass
        if self.params["destroy_on_failure"] or always:
            try:
                self.client.destroy(instance_id)
            except VastError as e:
                return "; destroying it failed too (%s): instance %s was created by this task and may still " \
                       "exist, billing $%.4f/h" % (e.msg, instance_id, burn_rate(row or {}))
            self.audit("destroy", instance_id=instance_id, label=label, price=(row or {}).get("dph_total"),
                       detail="destroy_on_failure")
            if instance_id in self.created_ids:
                self.created_ids.remove(instance_id)
            return "; destroyed it (destroy_on_failure)"
        return "; instance %s was created by this task and still exists, billing $%.4f/h (destroy_on_failure " \
               "is off)" % (instance_id, num((row or {}).get("dph_total")) or self.billed.get(instance_id, 0.0))

    def create(self, label):
        """Rent one instance labelled ``label``; returns (row or None in check mode, offer)."""
        p = self.params
        self.check_credit()
        self.check_count()
        excluded = set()
        tried = []
        self.result["offers_tried"] = tried
        offers = self.candidates(excluded)
        if not offers or offers[0].get("_missing"):
            if p["offer_id"] is not None:
                self.fail("offer %s is not available (taken or gone); search again with vast_offer_info "
                          "or use offer_filters" % p["offer_id"])
            self.fail("no offer matches offer_filters; widen gpu_names, max_dph or min_reliability "
                      "(query: %s)" % build_query(self.offer_filters(excluded), p["disk_gb"]))
        self.ensure_account_keys()
        last_error = None
        while len(tried) < p["max_offer_tries"]:
            offer = next((o for o in offers if o.get("machine_id") not in excluded
                          and o["id"] not in [t["offer_id"] for t in tried]), None)
            if offer is None:
                if p["offer_id"] is not None:
                    break
                offers = self.search(excluded)  # fresh candidates without the failed machines
                offer = next((o for o in offers if o["id"] not in [t["offer_id"] for t in tried]), None)
                if offer is None:
                    break
            bid = self.bid_for(offer)
            # an offer_id rented without any cap or bid is not searched, so its price is unknown here
            price = self.preflight(offer, bid) if "dph_total" in offer else None
            self.result["actions"].append("rent offer %s%s as %s" % (
                offer["id"], " ($%.4f/h%s)" % (price, ", bid" if bid is not None else "") if price is not None else "",
                label))
            if self.check_mode:
                self.result["changed"] = True
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="check_mode"))
                return None, offer
            try:
                answer = self.client.create_instance(offer["id"], self.creation_body(label, bid))
            except VastOfferUnavailableError as e:
                last_error = e
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="taken"))
                self.audit("create", label=label, price=price, result="offer_taken", offer_id=offer["id"])
                if offer.get("machine_id") is not None:
                    excluded.add(offer["machine_id"])
                rows = self.by_label(label)
                if rows:  # a racing run rented it meanwhile
                    return self.settle_race(label, None, rows), offer
                continue
            except VastError as e:
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="error: %s" % e.msg))
                if e.new_contract is not None:
                    # refused, yet created (an insufficient bid leaves a stopped instance, dstack PR #4036)
                    self.created_ids.append(e.new_contract)
                    self.audit("create", instance_id=e.new_contract, label=label, price=price, result="error",
                               offer_id=offer["id"], detail=e.msg)
                    self.fail_vast(e, doing="renting offer %s for %r was refused but the API created instance %s%s"
                                   % (offer["id"], label, e.new_contract, self.leftover(e.new_contract, label, always=True)),
                                   instance_id=e.new_contract, changed=True)
                if e.refused:
                    # refused outright (bad request, auth, credit): nothing was rented
                    self.audit("create", label=label, price=price, result="error", offer_id=offer["id"], detail=e.msg)
                    self.fail_vast(e, doing="renting offer %s for %r was refused" % (offer["id"], label))
                # The answer may be lost while the rental happened: never retry blindly.
                row = self.reconcile(label, offer["id"], e)
                if row is not None:
                    self.result["changed"] = True
                    self.result["actions"].append("create answer lost; found instance %s by label" % row["id"])
                    self.audit("create", instance_id=row["id"], label=label, price=price, result="reconciled",
                               offer_id=offer["id"])
                    return row, offer
                self.audit("create", label=label, price=price, result="error", offer_id=offer["id"], detail=e.msg)
                self.fail_vast(e, doing="renting offer %s for %r failed and no instance with that label exists"
                               % (offer["id"], label))
            self.result["changed"] = True
            new_id = answer.get("new_contract")
            tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="created"))
            self.audit("create", instance_id=new_id, label=label, price=price, offer_id=offer["id"])
            self.created_ids.append(new_id)
            self.billed[new_id] = price
            try:
                self.attach_keys(new_id)
                winner = self.settle_race(label, new_id)
                if winner is not None and winner["id"] != new_id:
                    return winner, offer
                self.settle_count(label, new_id)
                row = self.client.get_instance(new_id) or {"id": new_id, "label": label, "actual_status": None}
            except VastError as e:
                self.fail_vast(e, doing="instance %s (%s) was rented, but%s; the step after failed" % (
                    new_id, label, self.leftover(new_id, label)), instance_id=new_id)
            return row, offer
        ids = ", ".join(str(t["offer_id"]) for t in tried)
        self.fail("could not rent an instance: tried %d offer(s) (%s), all taken%s; widen max_dph or "
                  "gpu_names, or raise max_offer_tries" % (
                      len(tried), ids, " (%s)" % last_error.msg if last_error else ""))

    def ensure_account_keys(self):
        """VMs take their SSH keys from the account at creation: add missing ones first."""
        p = self.params
        if not (p["vm"] and p["ssh_keys"]) or self.check_mode:
            return
        have = set(key_material(k.get("public_key") or k.get("key")) for k in self.client.account_ssh_keys())
        for key in p["ssh_keys"]:
            if key_material(key) not in have:
                self.client.add_account_ssh_key(key)
                self.result["actions"].append("add ssh key to the account (needed by VMs)")
                have.add(key_material(key))

    def attach_keys(self, instance_id):
        p = self.params
        if not p["ssh_keys"] or p["vm"]:
            return
        for key in p["ssh_keys"]:
            self.client.attach_ssh_key(instance_id, key)
        self.result["actions"].append("attach %d ssh key(s)" % len(p["ssh_keys"]))

    # ------------------------------------------------------------------ mutations
    def mutate(self, action, row, call, settled, what):
        """Run one mutation of an existing instance (``call()``); never re-send it blindly.

        When the answer is lost (reset, timeout, 5xx) the server may have done it anyway:
        re-read the instance (a GET, retried safely) and, when ``settled(row_or_None)``, carry on
        as a success. When the re-read shows it did not happen, send it once more: these
        requests are idempotent (a target state, a label, a delete), so a first one that lands
        late does no harm. Otherwise fail naming the instance.
        """
        iid = row["id"]
        try:
            call()
            return False
        except VastError as e:
            if not e.may_have_happened:
                raise
            cause = e
        done, last = self.reread(iid, settled)
        if not done and last is None:
            self.result["actions"].append("%s answer lost and not done; sent it once more" % action)
            try:
                call()
                return True
            except VastError as e:
                cause = e  # lost again, or refused because a late first request already did it
            done, last = self.reread(iid, settled)
        if done:
            self.result["actions"].append("%s answer lost; instance %s is %s" % (action, iid, what))
            return True
        self.result["changed"] = True  # it may have happened
        if last is not None:
            self.fail("%s of instance %s (%s): the answer was lost (%s) and re-reading the instance failed too "
                      "(%s); its state is unknown, check it with vast_instance_info id=%s" % (
                          action, iid, row.get("label"), cause.msg, last.msg, iid),
                      exc=last, instance_id=iid)
        self.fail("%s of instance %s (%s): sent twice, both answers lost or refused (%s), and the instance is "
                  "not %s; run the task again" % (action, iid, row.get("label"), cause.msg, what),
                  exc=cause, instance_id=iid)

    def reread(self, iid, settled):
        """(settled, last read error) after up to MUTATION_RECONCILE_TRIES reads of the instance."""
        last = None
        step = min(1.0, self.params["poll_interval"])
        for dummy in attempts(tries=MUTATION_RECONCILE_TRIES, delay=step, factor=2):
            try:
                now, last = self.client.get_instance(iid), None
            except VastError as e:
                last = e
                continue
            if settled(now):
                return True, None
        return False, last

    def destroy(self, row, describe=None, detail=None):
        return self.perform(
            "destroy", row, describe or "destroy instance %s" % row["id"],
            call=lambda: self.client.destroy(row["id"]),
            settled=lambda now: now is None or now.get("destroyed_at") is not None
            or now.get("actual_status") == "destroyed",
            what="gone", planned={"state": "absent"}, detail=detail)

    def change_power(self, row, state, action):
        """Start or stop ``row`` (``state`` running/stopped) through :meth:`perform`; a start is
        checked against the account budget first (its GPUs bill again)."""
        if state == "running":
            self.check_budget(num(row.get("dph_total")), leave_out=(row["id"],))
        return self.perform(
            action, row, "%s instance %s" % (action, row["id"]),
            call=lambda: self.client.set_state(row["id"], state),
            settled=lambda now: now is not None and now.get("intended_status") == state,
            what="now intended %s" % state,
            planned={"id": row["id"], "label": row.get("label"), "state": state})

    def relabel(self, row, label):
        return self.perform(
            "label", row, "set label %r" % label, label=label,
            call=lambda: self.client.set_label(row["id"], label),
            settled=lambda now: now is not None and now.get("label") == label,
            what="labelled %r" % label)

    def reboot(self, row):
        return self.perform("reboot", row, "reboot instance %s" % row["id"], call=lambda: self.client.reboot(row["id"]),
                            planned={"id": row["id"], "label": row.get("label"), "state": "running"})

    # ------------------------------------------------------------------ waiting
    def wait_running(self, row, created=False):
        p = self.params
        if not p["wait"] or self.check_mode or row is None:
            return row
        self.result["actions"].append("wait for running")
        started = time.monotonic()
        start_timeout = p.get("start_timeout")
        since = {}

        def fail_fast(now):
            reason = never_running(now)
            if reason or not start_timeout or created:
                return reason
            if not scheduling(now):
                since.clear()
                return None
            since.setdefault("t", time.monotonic())
            if time.monotonic() - since["t"] >= start_timeout:
                return "stayed in scheduling for %ds (start_timeout): its GPU is not available, another tenant " \
                       "holds it" % start_timeout
            return None

        try:
            row = wait_instance(self.client, row["id"], is_running, p["wait_timeout"], p["poll_interval"], fail_fast)
        except VastError as e:
            self.fail_vast(e, doing="waiting for instance %s (%s) to run" % (row["id"], row.get("label")),
                           instance_id=row["id"], changed=self.result["changed"])
        except WaitTimeout as e:
            last = e.row or row
            self.wait_failed(last, "did not reach running within %ds%s" % (
                p["wait_timeout"], overridden(e.row, "running")), created, unavailable=scheduling(last))
        except WaitFailed as e:
            self.wait_failed(e.row, e.reason, created, unavailable="start_timeout" in e.reason)
        if p["wait_ssh"]:
            # auto: direct first, then the proxy; the one that answers is what the task returns
            kinds = ("direct", "proxy") if p["connect_with"] == "auto" else (p["connect_with"],)
            endpoints = [e for e in (ssh_endpoint(row, k) for k in kinds) if e]
            left = p["wait_timeout"] - (time.monotonic() - started)
            self.result["actions"].append("wait for ssh")
            answered = wait_ssh_banner(endpoints, max(left, 1), min(p["poll_interval"], 2)) if endpoints else None
            if answered is None:
                self.wait_failed(row, "runs, but SSH %s did not answer with a banner within %ds" % (
                    " or ".join("%s:%s" % (e["host"], e["port"]) for e in endpoints) or "(no endpoint)",
                    p["wait_timeout"]), created)
            if len(endpoints) > 1 and answered["kind"] == "proxy":
                answered = dict(answered, direct_silent=True)
                self.result["actions"].append("direct SSH did not answer; using the proxy")
            self.ssh_answered[row["id"]] = answered
        return row

    def wait_stopped(self, row, created=False):
        p = self.params
        if not p["wait"] or self.check_mode:
            return row
        self.result["actions"].append("wait for stopped")
        try:
            return wait_instance(self.client, row["id"], is_stopped, p["wait_timeout"], p["poll_interval"])
        except VastError as e:
            self.fail_vast(e, doing="waiting for instance %s (%s) to stop" % (row["id"], row.get("label")),
                           instance_id=row["id"])
        except WaitTimeout as e:
            self.wait_failed(e.row or row, "did not stop within %ds%s" % (
                p["wait_timeout"], overridden(e.row, "stopped")), created)

    def wait_failed(self, row, what, created, unavailable=False):
        iid = row.get("id")
        try:
            tail = self.client.logs(iid, tail=20, poll_tries=10)
        except VastError:
            tail = "(log not available)"
        msg = "instance %s (%s) %s: actual_status=%s, status_msg=%r" % (
            iid, row.get("label"), what, row.get("actual_status"), row.get("status_msg"))
        destroyed = False
        if unavailable and not created:
            # A start left waiting would begin billing GPU time whenever the other tenant lets go,
            # hours later and unattended: cancel it (stop again), so what the user sees is what bills.
            msg += self.cancel_start(row)
            row = dict(row, intended_status="stopped")
        if created:
            tail_msg = self.leftover(iid, row.get("label"))
            destroyed = "destroyed it" in tail_msg
            msg += tail_msg
        self.fail(msg, instance_id=iid, status_msg=row.get("status_msg"), log_tail=tail,
                  instance=None if destroyed else self.view(row), unavailable=bool(unavailable))

    def cancel_start(self, row):
        try:
            self.change_power(row, "stopped", "stop")
        except VastError as e:
            return "; cancelling the start failed (%s): it may still start and bill when its GPU frees" % (
                describe_error(e, self.params.get("api_retries")))
        return "; the start was cancelled (stopped again) so it cannot start billing later unattended"

    # ------------------------------------------------------------------ desired states of one instance
    def ensure_absent(self, row, label):
        if row is not None:
            self.destroy(row)
        return None

    def ensure_created(self, label, state):
        """No instance carries the identity: rent one (``state`` stopped creates it stopped)."""
        p = self.params
        if p["id"] is not None:
            self.fail("instance %s does not exist (destroyed, or not on this account); an instance cannot be "
                      "created with a given id - use label" % p["id"], instance_id=p["id"])
        if not any(p.get(k) for k in ("offer_id", "offer_filters", "image", "template_hash")):
            self.fail("no instance labelled %r exists and no creation options (offer_id or offer_filters, "
                      "image) were given to create one" % label)
        if not (p["offer_id"] or p["offer_filters"]):
            self.fail("no instance labelled %r exists; give offer_id or offer_filters to rent one" % label)
        target = "stopped" if state == "stopped" else "running"
        new_row, offer = self.create(label)
        if new_row is None:  # check mode
            self.planned = {"id": None, "label": label, "state": target, "offer_id": offer["id"]}
            return None
        if state == "stopped":
            # No live-tested client sends target_state at creation: create, then stop, then confirm.
            if new_row.get("actual_status") in STOPPED and new_row.get("intended_status") == "stopped":
                return new_row
            self.change_power(new_row, "stopped", "stop")
            return self.wait_stopped(new_row, created=new_row["id"] in self.created_ids)
        return self.wait_running(new_row, created=new_row["id"] in self.created_ids)

    def ensure_present(self, row, label):
        if row.get("actual_status") in (None, "loading", "created") and row.get("intended_status") != "stopped":
            return self.wait_running(row) if self.params["wait"] else row
        return row

    def ensure_running(self, row, label):
        if is_running(row):
            return row
        if row.get("intended_status") != "running":
            self.change_power(row, "running", "start")
            if self.check_mode:
                return row
        return self.wait_running(row)

    def ensure_stopped(self, row, label):
        if row.get("actual_status") in STOPPED and row.get("intended_status") != "running":
            return row
        if row.get("intended_status") != "stopped":  # else already asked for: just wait
            self.change_power(row, "stopped", "stop")
            if self.check_mode:
                return row
        return self.wait_stopped(row)

    def ensure_restarted(self, row, label):
        if row.get("actual_status") == "running":
            self.reboot(row)
        else:
            self.change_power(row, "running", "start")
        if self.check_mode:
            return row
        return self.wait_running(dict(row, actual_status="rebooting"))

    def creation_only_differences(self, row):
        """Creation-only options of this task that the existing instance does not have (vast.ai
        cannot change them later): ``{option: (instance's value, asked)}``."""
        p = self.params
        if p["state"] == "absent" or not any(p.get(k) for k in ("offer_id", "offer_filters", "image", "template_hash")):
            return {}
        out = {}
        if p["image"] and row.get("image_uuid") and row["image_uuid"] != p["image"]:
            out["image"] = (row["image_uuid"], p["image"])
        if row.get("disk_space") is not None and abs(num(row["disk_space"]) - float(p["disk_gb"])) > 0.5:
            out["disk_gb"] = (num(row["disk_space"]), float(p["disk_gb"]))
        if p["template_hash"] and row.get("template_hash_id") != p["template_hash"]:
            out["template_hash"] = (row.get("template_hash_id"), p["template_hash"])
        if row.get("is_bid") is not None and bool(row["is_bid"]) != self.interruptible():
            out["interruptible"] = (bool(row["is_bid"]), self.interruptible())
        return out

    def ensure(self, states, row, label):
        """Bring one instance to ``params['state']`` with the module's state table ``states``
        (state -> method name of this class, taking ``(row, label)``)."""
        p = self.params
        if p["state"] != "absent" and row is None:
            return self.ensure_created(label, p["state"])
        differ = self.creation_only_differences(row) if row is not None else {}
        if differ:
            self.warnings.append(
                "instance %s (%s) keeps its creation-only settings: %s; vast.ai cannot change them - destroy and "
                "create it to apply them" % (row["id"], row.get("label"), ", ".join(
                    "%s is %r, asked %r" % (k, v[0], v[1]) for k, v in sorted(differ.items()))))
            self.differ = differ
        if p["state"] != "absent" and p["id"] is not None and p["label"] and row.get("label") != p["label"]:
            self.relabel(row, p["label"])
            row = dict(row, label=p["label"])
        return getattr(self, states[p["state"]])(row, label)

    def run(self, states):
        """One instance by label or id: result keys ``instance`` and ``diff``."""
        p = self.params
        label = self.resolve_label()
        if label is None and p["id"] is None:
            self.fail("give label, name or id to identify the instance")
        found = None
        try:
            row = found = self.find(label)
            before = self.snapshot(row)
            row = self.ensure(states, row, label)
        except VastError as e:
            iid = p["id"] if p["id"] is not None else (found or {}).get("id")
            if iid is None:
                raise
            # name the instance, so nobody has to guess which one is in an unknown state
            self.fail_vast(e, doing="instance %s (%s), state=%s" % (iid, label or "no label", p["state"]),
                           instance_id=iid)
        self.result["instance"] = self.view(row) if row else None
        after = dict(self.planned or self.snapshot(row))
        if self.differ:  # shown, not applied
            before = dict(before, creation_only=dict((k, v[0]) for k, v in self.differ.items()))
            after["creation_only"] = dict((k, v[1]) for k, v in self.differ.items())
        self.result["diff"] = dict(before=before, after=after)
        return self.result

    # ------------------------------------------------------------------ replicas
    def run_exact_count(self, states):
        """Replicas ``<prefix>-1..N``: result keys ``instances`` and ``diff``."""
        p = self.params
        prefix = self.resolve_label()
        if not prefix:
            self.fail("exact_count needs label or name for the replica label prefix")
        pattern = re.compile(r"^%s-(\d+)$" % re.escape(prefix))

        def replicas():
            return [r for r in self.client.list_instances() if pattern.match(r.get("label") or "")]
        rows = self.settled(replicas, lambda rows: len(set(r["label"] for r in rows)) < len(rows))
        by_index = {}
        for r in rows:
            by_index.setdefault(int(pattern.match(r["label"]).group(1)), []).append(r)
        dupes = [ix for ix, rs in by_index.items() if len(rs) > 1]
        if dupes:
            ids = sorted(r["id"] for ix in dupes for r in by_index[ix])
            self.fail("replica labels %s are used by several instances (ids %s); fix them first" % (
                ", ".join("%s-%d" % (prefix, ix) for ix in sorted(dupes)), ", ".join(str(i) for i in ids)),
                instance_ids=ids)
        have = sorted(by_index)
        keep = have[: p["exact_count"]]
        drop = have[p["exact_count"]:]
        before = {"count": len(have), "labels": ["%s-%d" % (prefix, ix) for ix in have]}
        for ix in drop:
            r = by_index[ix][0]
            self.destroy(r, describe="destroy instance %s (%s)" % (r["id"], r["label"]), detail="exact_count")
        missing = []
        ix = 1
        while len(keep) + len(missing) < p["exact_count"]:
            if ix not in by_index:
                missing.append(ix)
            ix += 1
        result_rows = []
        for ix in keep:
            label = "%s-%d" % (prefix, ix)
            result_rows.append(getattr(self, states[p["state"]])(by_index[ix][0], label))
        for ix in missing:
            label = "%s-%d" % (prefix, ix)
            self.result["changed"] = True
            new_row, offer = self.create(label)
            result_rows.append(new_row or {"id": None, "label": label, "actual_status": None})
        if not self.check_mode:
            result_rows = [self.wait_running(r, created=r["id"] in self.created_ids) for r in result_rows]
        self.result["instances"] = sorted((self.view(r) for r in result_rows if r), key=lambda r: r.get("label") or "")
        after_labels = sorted(set(["%s-%d" % (prefix, i) for i in keep + missing]))
        self.result["diff"] = dict(before=before, after={"count": len(after_labels), "labels": after_labels})
        return self.result
