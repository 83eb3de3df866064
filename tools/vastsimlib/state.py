"""Account, instances and their lifecycle on the simulated clock.

Lifecycle is evaluated lazily: every API or control request first calls `Sim.tick()`, which
replays each instance's pending transitions up to "now" and records billable intervals on the
way, so `/_sim/clock/advance` and a fast `--speed` give exact billing without a timer thread.
All state is guarded by `Sim.lock` (one RLock: requests are short, latency is slept outside it).
"""
import json
import os
import secrets
import threading

from . import billing, offers as offers_mod
from .clock import Clock
from .errors import ApiError

# simulated seconds each phase takes
T_PROVISION = 4.0      # actual_status null → loading
T_LOAD = 40.0          # loading (image pull) → running
T_RESTART_LOAD = 10.0  # loading after a start → running
T_STOP = 3.0           # running → stopped
T_REBOOT = 8.0         # rebooting → running
T_SCHEDULE = 2.0       # start accepted → loading (when the GPU is free)

# A start that waits for a GPU another tenant holds. The exact live status_msg is not public;
# the vast CLI's `start instance` help (docs.vast.ai/cli/reference/start-instance) says an
# instance "stuck in the \"scheduling\" state for more than 30 seconds" means "the required
# resources on the machine to run your instance are currently unavailable".
MSG_SCHEDULING = "Scheduling: waiting for the GPU to become available (required resources on the machine are unavailable)"
# docs.vast.ai/cli/reference/show-instances: actual_status "offline" = "Host machine disconnected
# from Vast servers (computed, not stored in DB)"; "unknown" = "No recent heartbeat from the host".
MSG_OFFLINE = "Host offline: no recent heartbeat from the host"

STORED_COLUMNS = {"id", "label", "actual_status", "intended_status", "cur_state", "next_state",
                  "gpu_name", "verification", "machine_id", "host_id", "image_uuid", "start_date",
                  "geolocation", "template_id", "template_hash_id", "is_bid",
                  "image_runtype", "status_msg", "disk_space", "end_date"}
COMPUTED_COLUMNS = {"dph_total", "num_gpus", "dph_base", "duration", "reliability2", "dlperf",
                    "cpu_ram", "gpu_ram", "inet_up", "inet_down", "total_flops", "storage_total_cost"}


class Instance:
    """One rental. `row()` renders what the API returns; the rest is bookkeeping."""

    def __init__(self, iid, offer, body, now, api_key):
        self.id = iid
        self.offer = offer                  # priced offer at rent time (includes dph_*)
        self.created_at = now
        self.start_date = now
        self.destroyed_at = None
        self.label = body.get("label")
        self.image = body.get("image") or "vastai/base-image:latest"
        self.env = body.get("env") or {}
        self.onstart = body.get("onstart")
        self.args = body.get("args")
        self.args_str = body.get("args_str")
        self.runtype = body.get("runtype") or "ssh"
        self.disk = float(body.get("disk") or 8)
        self.bid = body.get("price")
        self.template_hash_id = body.get("template_hash_id")
        self.template_id = body.get("template_id")
        self.image_login = body.get("image_login")
        self.vm = bool(body.get("vm"))
        # No `price` means on-demand at dph_base, even when the offer came from a type=bid search:
        # the API rents on-demand silently and the answer does not say so (vast-cli PR #403).
        self.gpu_rate = float(self.bid if self.bid is not None else offer["dph_base"])
        self.instance_api_key = api_key
        self.actual_status = None
        self.intended_status = "running"
        self.cur_state = "running"
        self.next_state = "running"
        self.status_msg = None
        self.pending = None                 # (sim time, target status)
        self.hold = False
        self.acc_t = now                    # billing accounted up to here
        self.gpu_intervals = []             # [[start, end|None]] while GPU billable
        self.ssh_keys = []                  # key texts on this instance
        self.net = {"ssh_host": None, "ssh_port": None, "public_ipaddr": offer.get("public_ipaddr"),
                    "ports": None, "direct_port_start": offer.get("direct_port_start", -1),
                    "direct_port_end": offer.get("direct_port_end", -1), "local_ipaddrs": None,
                    "machine_dir_ssh_port": None, "ssh_idx": None}
        self.log_lines = []
        self.booted = False                 # first boot pulls the image (T_LOAD), later ones are quick
        self.backend = {}                   # free-form data a hosts backend keeps per instance
        self.host_down = False              # /_sim/instances/<id>/offline: the host lost until /online

    # --- env helpers -------------------------------------------------------------------
    def extra_env(self):
        """The API's `extra_env`: [[key, value], ...] including `-p` port requests."""
        if isinstance(self.env, dict):
            return [[str(k), "" if v is None else str(v)] for k, v in self.env.items()]
        return []

    def requested_ports(self):
        """Internal ports asked for with `-p H:C[/proto]` keys in env, as 'N/tcp' strings."""
        out = []
        for k in (self.env or {}):
            k = str(k).strip()
            if k.startswith("-p "):
                spec = k[3:].strip()
                proto = "tcp"
                if "/" in spec:
                    spec, proto = spec.split("/", 1)
                inner = spec.split(":")[-1]
                if inner.isdigit():
                    out.append(f"{int(inner)}/{proto}")
        return out

    def is_vm(self):
        return self.vm or "vastai/kvm" in (self.image or "")

    # --- state changes -------------------------------------------------------------------
    def set_actual(self, status, t):
        was_billing = self.actual_status in billing.BILLABLE_GPU
        now_billing = status in billing.BILLABLE_GPU
        if was_billing and not now_billing and self.gpu_intervals and self.gpu_intervals[-1][1] is None:
            self.gpu_intervals[-1][1] = t
        if now_billing and not was_billing:
            self.gpu_intervals.append([t, None])
        self.actual_status = status

    def uptime_mins(self, now):
        """Minutes of the current running session (None unless the GPU is billing)."""
        if self.gpu_intervals and self.gpu_intervals[-1][1] is None:
            return round((now - self.gpu_intervals[-1][0]) / 60.0, 3)
        return None

    def filter_view(self):
        """The stored columns only: cheap enough to build for every instance on every list call."""
        o = self.offer
        return {"id": self.id, "label": self.label, "actual_status": self.actual_status,
                "intended_status": self.intended_status, "cur_state": self.cur_state,
                "next_state": self.next_state, "gpu_name": o.get("gpu_name"),
                "verification": o.get("verification"), "machine_id": o.get("machine_id"),
                "host_id": o.get("host_id"), "image_uuid": self.image, "start_date": self.start_date,
                "geolocation": o.get("geolocation"), "template_id": self.template_id,
                "template_hash_id": self.template_hash_id, "is_bid": self.bid is not None,
                "image_runtype": self.runtype, "status_msg": self.status_msg, "disk_space": self.disk,
                "end_date": o.get("end_date")}

    def row(self, now):
        o = self.offer
        running = self.actual_status == "running"
        row = {k: o.get(k) for k in (
            "machine_id", "host_id", "bundle_id", "num_gpus", "gpu_name", "gpu_arch", "gpu_ram",
            "gpu_frac", "gpu_lanes", "gpu_mem_bw", "bw_nvlink", "cuda_max_good", "driver_version",
            "cpu_name", "cpu_arch", "cpu_cores", "cpu_cores_effective", "cpu_ram", "disk_name", "disk_bw",
            "inet_up", "inet_down", "inet_up_cost", "inet_down_cost", "mobo_name", "os_version", "pci_gen",
            "pcie_bw", "dph_base", "storage_cost", "storage_total_cost", "vram_costperhour", "min_bid",
            "credit_discount_max", "dlperf", "dlperf_per_dphtotal", "flops_per_dphtotal", "total_flops",
            "score", "verification", "hosting_type", "external", "geolocation", "country_code",
            "logo", "webpage", "direct_port_count", "static_ip", "compute_cap", "has_avx",
            "gpu_max_power", "gpu_max_temp", "gpu_display_active", "search", "instance", "end_date",
            "vms_enabled")}
        row.update({
            "id": self.id, "label": self.label, "template_id": self.template_id,
            "template_hash_id": self.template_hash_id, "template_name": None,
            "image_uuid": self.image, "image_args": list(self.args or []), "image_runtype": self.runtype,
            "extra_env": self.extra_env(), "onstart": self.onstart, "jupyter_token": None,
            "actual_status": self.actual_status, "intended_status": self.intended_status,
            "cur_state": self.cur_state, "next_state": self.next_state, "status_msg": self.status_msg,
            "gpu_totalram": o.get("gpu_total_ram"), "gpu_util": 0.0 if running else None,
            "gpu_temp": 35.0 if running else None, "cpu_util": 0.0 if running else None,
            "mem_usage": 0.0 if running else None, "mem_limit": None, "vmem_usage": 0.0 if running else None,
            "disk_space": self.disk, "disk_usage": 0.0, "disk_util": -1,
            "dph_total": round(self.gpu_rate + billing.storage_rate(self), 6), "is_bid": self.bid is not None,
            "rentable": True, "reliability2": o.get("reliability2"), "credit_balance": None,
            "credit_discount": None, "start_date": self.start_date, "duration": now - self.start_date,
            "uptime_mins": self.uptime_mins(now), "client_run_time": 0.0, "host_run_time": 0.0,
            "time_remaining": "", "time_remaining_isbid": "", "volume_info": [],
        })
        # Interruptible rentals (a create with `price` is a bid: dstack issue #4026, vast-cli PR
        # #403): is_bid true, dph_total = the bid + storage, min_bid the machine's listed floor.
        # Simulator choice (no source shows a live bid row's breakdown): the row's "instance"
        # price breakdown is what this rental pays (the bid), not the offer's search price.
        storage = billing.storage_rate(self)
        row["instance"] = dict(o.get("instance") or {}, gpuCostPerHour=round(self.gpu_rate, 6),
                               diskHour=storage, totalHour=row["dph_total"],
                               discountedTotalPerHour=row["dph_total"])
        net = dict(self.net)
        if not running:
            net["ports"] = None   # ports only while running
        row.update(net)
        if not (o.get("direct_port_count") or 0) and not net.get("ports"):
            # No direct port range: live rows carry no `ports` mapping at all (dstack reads
            # ports["<port>/tcp"] and so filters direct_port_count >= 1; SkyPilot query_ports:
            # only the gateway's ssh_port / ssh_port+1 are forwarded).
            row.pop("ports", None)
        return row   # instance_api_key is never in a row: create returns it once

    # --- persistence ---------------------------------------------------------------------
    def dump(self):
        d = dict(self.__dict__)
        return d

    @classmethod
    def load(cls, d):
        inst = cls.__new__(cls)
        inst.__dict__.update(d)
        if inst.pending is not None:
            inst.pending = tuple(inst.pending)
        return inst


class AvailableOffers(list):
    """A list of offers that also carries `by_id` (offer id → offer)."""
    by_id = None


class Sim:
    def __init__(self, api_key="sim-key", seed=1, n_offers=400, speed=1.0, hosts=None,
                 state_file=None, credit=100.0):
        self.lock = threading.RLock()
        self.clock = Clock(speed)
        self.api_key = api_key
        self.seed = seed
        self.state_file = state_file
        now = self.clock.now()
        self.catalogue = offers_mod.generate(n_offers, seed, now)
        self.by_offer = {o["id"]: o for o in self.catalogue}
        self.index = offers_mod.Index(self.catalogue)
        self.rented = {}           # offer id → instance id (ours)
        self.taken = set()         # offer ids rented by "another tenant"
        self.unavailable = set()   # listed, but the machine cannot schedule (cancel_unavail)
        self.bid_floor = {}        # offer id → bid the host now requires (another tenant outbid the listed min_bid)
        self.create_failures = []  # [kind, ...]: the next creates fail this way (/_sim/create_failures)
        self.team_scoped = False   # the API key is team-scoped: account SSH keys are refused
        self.ignore_target_state = False   # create ignores target_state (no live-tested client sends it)
        self.instances = {}        # id → Instance (destroyed ones kept for billing)
        self.next_instance_id = 21000000 + (seed % 1000) * 1000
        self.user = {
            "id": 424242, "email": "sim@example.com", "username": "simuser", "fullname": "Sim User",
            "balance": 0.0, "credit": credit, "balance_threshold": 0.0, "balance_threshold_enabled": False,
            "billaddress_city": None, "billaddress_country": None, "billaddress_line1": None,
            "billaddress_line2": None, "billaddress_zip": None, "billed_expected": 0.0,
            "billed_verified": 0.0, "billing_creditonly": 0, "can_pay": True, "email_verified": True,
            "got_signup_credit": 1, "has_billing": True, "has_payout": False, "last4": "4242",
            "paid_expected": 0.0, "paid_verified": 0.0, "password_resettable": True,
            "paypal_email": None, "ssh_key": None, "user": "simuser", "host_agreement_accepted": False,
            "key_id": 1, "sid": None, "rights": None,
        }
        self.credit_base = float(credit)   # credit = credit_base - everything ever charged
        self.payments = [{"id": 1, "when": now - 3600, "amount": float(credit),
                          "service": "stripe_payments", "description": "Credit card deposit"}]
        self.ssh_keys = []         # account keys: {"id","key","created_at"}
        self.next_key_id = 90001
        self.extra_key_ids = {}    # key text → id for keys attached only to instances
        self.credit_hint = None    # (sim time, credit then, max $/h) — see _credit_unless_surely_positive
        self._available = None
        self.version = 0           # bumped by every mutation and status change (list cache key)
        self.list_cache = {}
        self.results = {}          # token → text, for logs/execute result_url
        self.hosts = hosts
        if state_file and os.path.exists(state_file):
            self.load(state_file)

    # --- lookup ---------------------------------------------------------------------------
    def all_instances(self):
        return list(self.instances.values())

    def live_instances(self):
        return [i for i in self.instances.values() if i.destroyed_at is None]

    def get_live(self, iid):
        inst = self.instances.get(iid)
        if inst is None or inst.destroyed_at is not None:
            return None
        return inst

    def available_offers(self):
        """Offers nobody rents, in catalogue order; cached until the next mutation."""
        if self._available is None:
            rows = AvailableOffers(o for o in self.catalogue if o["id"] not in self.rented and o["id"] not in self.taken)
            rows.by_id = {o["id"]: o for o in rows}
            self._available = rows
        return self._available

    def invalidate_caches(self):
        """Called after every mutating request (API or control)."""
        self._available = None
        self.credit_hint = None
        self.version += 1

    def credit(self):
        return self.credit_base - billing.total_spent(self.instances.values(), self.clock.now())

    # --- lifecycle ------------------------------------------------------------------------
    def tick(self):
        """Bring every instance up to the simulated now."""
        now = self.clock.now()
        for inst in self.instances.values():
            if inst.destroyed_at is None:
                self._advance(inst, now)
        # zero balance: vast stops running instances when credit runs out
        credit = self._credit_unless_surely_positive(now)
        if credit is not None and credit <= 0:
            self._stop_for_credit(now, -credit)
        self.last_tick = now
        return now

    def _credit_unless_surely_positive(self, now):
        """Cheap guard for the zero-credit check: the last computed credit minus the highest
        possible spend since then (every live GPU billing) is still positive → skip the O(n) sum.
        Any mutation resets the hint (invalidate_caches). Returns the credit or None."""
        hint = self.credit_hint
        if hint is not None:
            t0, c0, rate = hint
            if c0 - rate * max(0.0, now - t0) / 3600.0 > 0:
                return None
        live = self.live_instances()
        if not any(i.actual_status in billing.BILLABLE_GPU for i in live):
            return None
        rate = sum(i.gpu_rate + billing.storage_rate(i) for i in live)
        credit = self.credit()
        self.credit_hint = (now, credit, rate)
        return credit

    def _stop_for_credit(self, now, overshoot):
        """Stop billable instances at the moment credit reached zero (rates assumed constant
        since the previous tick), so a clock jump does not bill GPU time past that moment."""
        live = self.live_instances()
        running = [i for i in live if i.actual_status in billing.BILLABLE_GPU and not i.hold]
        rate = (sum(i.gpu_rate for i in running) + sum(billing.storage_rate(i) for i in live)) / 3600.0
        t_zero = max(getattr(self, "last_tick", now), now - (overshoot / rate if rate > 0 else 0.0))
        self.version += 1
        for inst in running:
            if inst.gpu_intervals and inst.gpu_intervals[-1][1] is None:
                inst.gpu_intervals[-1][1] = max(inst.gpu_intervals[-1][0], t_zero)
            inst.actual_status = "stopped"
            inst.intended_status = "stopped"
            inst.cur_state = "stopped"
            inst.next_state = "stopped"
            inst.pending = None
            inst.net["ports"] = None
            inst.status_msg = "Stopped: account credit exhausted"
            if self.hosts is not None:
                self.hosts.on_stop(inst)

    def _advance(self, inst, now):
        if getattr(inst, "host_down", False):
            return  # the host is gone: nothing changes until it comes back (host_online)
        while inst.pending is not None and not inst.hold and inst.pending[0] <= now:
            t, target = inst.pending
            if target == "running" and not self._backend_ready(inst):
                break  # stays loading until the host backend says the box is up
            inst.pending = None
            self._enter(inst, target, t)
        # scheduling: a start waiting for a GPU that another tenant holds
        if (inst.pending is None and not inst.hold and inst.intended_status == "running"
                and inst.actual_status in ("stopped", "exited") and inst.next_state == "running"):
            if inst.offer["id"] not in self.taken:
                inst.pending = (now, "loading")
                inst.status_msg = "Scheduling: GPU available, starting"
                if self.hosts is not None:
                    self.hosts.on_start(inst)   # only now: no box runs while the GPU is taken
                self._advance(inst, now)

    def _backend_ready(self, inst):
        if self.hosts is None:
            return True
        try:
            return bool(self.hosts.is_ready(inst))
        except Exception:
            return False

    def fail(self, inst, kind, t=None):
        """Put an instance into a live failure state it never leaves by itself."""
        t = self.clock.now() if t is None else t
        inst.pending = None
        if kind == "oci":
            # dstack compute.py: actual_status "created" with ": OCI runtime create failed:" in
            # status_msg never becomes running; dstack fails on it at once.
            inst.set_actual("created", t)
            inst.status_msg = ("Error response from daemon: failed to create task for container: "
                               "failed to create shim task: OCI runtime create failed: runc create failed: "
                               "unable to start container process: error during container init: "
                               "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=13.0")
            inst.log_lines.append(f"[{t:.0f}] {inst.status_msg}")
        elif kind == "outbid":
            # dstack PR #4037: an interrupted (outbid) instance reports cur_state, intended_status
            # and next_state all "stopped"; actual_status follows once the container is down.
            inst.intended_status = inst.cur_state = inst.next_state = "stopped"
            inst.status_msg = "Stopped: outbid by a higher bid on this machine"
            inst.pending = (t + T_STOP, "stopped")
            if self.hosts is not None:
                self.hosts.on_stop(inst)
        else:
            raise ValueError(f"unknown failure {kind!r}; one of oci, outbid")
        self.version += 1

    # --- platform events (/_sim/instances/<id>/<event> and fault-rule events) -----------------
    EVENTS = ("gpu_taken", "gpu_released", "preempt", "outbid", "offline", "online")

    def event(self, inst, name):
        """Apply one platform event to a live instance (ValueError/ApiError when it cannot apply)."""
        if name not in self.EVENTS:
            raise ValueError(f"unknown event {name!r}; one of {list(self.EVENTS)}")
        getattr(self, "_ev_" + name)(inst)
        self.version += 1

    def _ev_gpu_taken(self, inst):
        # Another tenant rents the GPUs of this instance's machine. A running contract keeps its
        # GPU (vast.ai/docs/renting/instance-details, Stop / Start: on stop "the GPU will become
        # available, so you no longer have GPU priority"), so only a later start is affected: it
        # stays in scheduling (docs.vast.ai/cli/reference/start-instance: "stuck in the
        # \"scheduling\" state" when "the required resources on the machine to run your
        # instance are currently unavailable"), here for as long as the GPU is taken.
        self.taken.add(inst.offer["id"])
        if (inst.intended_status == "running" and inst.actual_status in ("stopped", "exited")
                and inst.pending is not None and inst.pending[1] == "loading"):
            inst.pending = None     # a start still in scheduling loses the race for the GPU
            inst.status_msg = MSG_SCHEDULING
            if self.hosts is not None:
                self.hosts.on_stop(inst)    # its box, begun by start(), waits for the GPU too
        self._available = None

    def _ev_gpu_released(self, inst):
        self.taken.discard(inst.offer["id"])
        self._available = None
        self._advance(inst, self.clock.now())   # a waiting start goes on at once

    def _ev_outbid(self, inst):
        self.fail(inst, "outbid")

    def _ev_preempt(self, inst):
        # Only bids are outbid: vast.ai/docs/renting/instance-details — interruptible instances
        # "use a bidding system for priority ... Lower priority instances are paused"; on-demand
        # ones have "exclusive control over the GPU(s) and have high priority". The fields are
        # those of fail("outbid") (dstack PR #4037); the docs' "paused until they become the
        # highest priority" is not modelled: the instance stays stopped, as dstack reads it.
        if inst.bid is None:
            raise ApiError(400, "invalid_args", f"instance {inst.id} is on-demand (is_bid false): "
                           "only an interruptible (bid) instance can be outbid")
        self.fail(inst, "outbid")

    def _ev_offline(self, inst):
        # The host is lost: actual_status "offline" (docs.vast.ai/cli/reference/show-instances:
        # "Host machine disconnected from Vast servers (computed, not stored in DB)"; "unknown"
        # is "No recent heartbeat from the host"). Simulator choice: it stays offline until
        # /online (no source says when a host returns; clients treat offline as terminal while
        # provisioning, docs/vast-api-notes.md "Readiness"). intended_status is kept: it is
        # what the instance goes back to when the host returns.
        now = self.clock.now()
        if getattr(inst, "host_down", False):
            return
        self._advance(inst, now)
        inst.host_down = True
        inst.pre_offline = inst.actual_status
        inst.set_actual("offline", now)     # no GPU billing while the host is gone
        inst.status_msg = MSG_OFFLINE
        inst.log_lines.append(f"[{now:.0f}] host offline")
        if self.hosts is not None:
            self.hosts.on_stop(inst)        # --hosts docker: the box stops, its ports go dark

    def _ev_online(self, inst):
        # The host is back: the instance continues towards intended_status (a running contract
        # still holds its GPU; a stop asked for meanwhile is carried out).
        if not getattr(inst, "host_down", False):
            return
        now = self.clock.now()
        inst.host_down = False
        before = getattr(inst, "pre_offline", None)
        inst.pre_offline = None
        inst.log_lines.append(f"[{now:.0f}] host online")
        if inst.intended_status == "running":
            if before is None:
                inst.set_actual(None, now)
                inst.pending = (now + T_PROVISION, "loading")
            elif before in ("stopped", "exited"):
                # a start waiting for its GPU waits on; _advance starts its box once the GPU is free
                inst.set_actual(before, now)
                inst.status_msg = MSG_SCHEDULING if inst.offer["id"] in self.taken else "Scheduling"
                inst.pending = None
            else:
                self._enter(inst, "loading", now)   # the container restarts on the returned host
            if self.hosts is not None and before not in ("stopped", "exited"):
                self.hosts.on_start(inst)
        else:
            inst.set_actual("stopped", now)
            inst.cur_state = inst.next_state = "stopped"
            inst.pending = None
            inst.status_msg = inst.status_msg if (inst.status_msg or "").startswith("Stopped") else "Stopped."
        self._advance(inst, now)

    def _enter(self, inst, status, t):
        if status == "loading" and getattr(inst, "doomed", None):
            kind, inst.doomed = inst.doomed, None
            return self.fail(inst, kind, t)
        self.version += 1
        inst.set_actual(status, t)
        if status == "loading":
            inst.status_msg = f"Pulling image {inst.image}"
            inst.log_lines.append(f"[{t:.0f}] pulling {inst.image}")
            inst.pending = (t + (T_RESTART_LOAD if inst.booted else T_LOAD), "running")
        elif status == "running":
            inst.cur_state = "running"
            inst.next_state = "running"
            inst.booted = True
            inst.status_msg = f"success, running {inst.image}/ssh"
            inst.log_lines.append(f"[{t:.0f}] container started: {inst.image}")
            if self.hosts is not None:
                self.hosts.on_running(inst)
        elif status == "stopped":
            inst.cur_state = "stopped"
            inst.next_state = "stopped" if inst.intended_status == "stopped" else inst.next_state
            inst.status_msg = inst.status_msg if (inst.status_msg or "").startswith("Stopped") else "Stopped."
            inst.log_lines.append(f"[{t:.0f}] container stopped")
        elif status == "rebooting":
            inst.status_msg = "Rebooting"
            inst.pending = (t + T_REBOOT, "running")

    def create(self, offer_id, body, key):
        now = self.clock.now()
        offer = self.by_offer.get(offer_id)
        if offer is None or offer_id in self.rented or offer_id in self.taken:
            raise ApiError(404, "invalid_args", f"error 404/3603: no_such_ask  Instance type by id {offer_id} "
                           "is not available.", ask_id=offer_id)
        kind = "bid" if body.get("price") is not None else "on-demand"
        priced = offers_mod.priced(offer, float(body.get("disk") or 8), kind)
        unavailable = offer_id in self.unavailable
        if unavailable and body.get("cancel_unavail"):
            raise ApiError(410, "no_such_ask", f"Instance type by id {offer_id} is no longer available.",
                           ask_id=offer_id)
        iid = self.next_instance_id
        self.next_instance_id += 1
        inst = Instance(iid, priced, body, now, key)
        inst.ssh_keys = [k["key"] for k in self.ssh_keys]
        failure = self.create_failures.pop(0) if self.create_failures else None
        floor = self.bid_floor.get(offer_id, offer["min_bid"])
        if failure == "insufficient_bid" or (body.get("price") is not None and float(body["price"]) < floor):
            # dstack PR #4036: with an insufficient bid vast still creates the instance, stopped,
            # and answers an error that carries its id in `new_contract` (it bills storage).
            inst.intended_status = inst.cur_state = inst.next_state = "stopped"
            inst.actual_status = "stopped"
            inst.status_msg = "Stopped: bid %s is below the current minimum bid %s" % (body.get("price"), floor)
            inst.create_error = "insufficient_bid"
        elif (body.get("target_state") == "stopped" and not self.ignore_target_state) or unavailable:
            # target_state is in the official client only; no live-tested client (dstack, SkyPilot)
            # sends it, so /_sim/account {"ignore_target_state": true} lets tests check that a
            # client does not rely on it
            inst.intended_status = "stopped"
            inst.cur_state = "stopped"
            inst.next_state = "stopped"
            inst.actual_status = None if not unavailable else "stopped"
            inst.status_msg = "Created stopped: machine unavailable" if unavailable else "Created (stopped)"
        else:
            inst.pending = (now + T_PROVISION, "loading")
            if failure in ("oci", "outbid"):
                inst.doomed = failure   # applied when it would start loading (see _enter)
        self.instances[iid] = inst
        self.rented[offer_id] = iid
        self._available = None
        if self.hosts is not None:
            self.hosts.on_create(inst)
        return inst

    def stop(self, inst, reason=None):
        now = self.clock.now()
        inst.intended_status = "stopped"
        inst.next_state = "stopped"
        if reason:
            inst.status_msg = reason
        if inst.actual_status == "stopped":
            inst.pending = None   # stopping a stopped instance is a successful no-op
        else:
            inst.pending = (now + T_STOP, "stopped")
        if self.hosts is not None:
            self.hosts.on_stop(inst)

    def start(self, inst):
        now = self.clock.now()
        if inst.intended_status == "running" and inst.actual_status not in ("stopped", "exited"):
            return  # already running or on its way
        inst.intended_status = "running"
        inst.next_state = "running"
        if getattr(inst, "host_down", False):
            return  # the host is offline: the start is carried out when it returns (_ev_online)
        if inst.offer["id"] in self.taken:
            # scheduling until the GPU is free: the box starts then (_advance), not now; a start
            # stuck in scheduling runs nothing on the host (docs.vast.ai/cli/reference/start-instance)
            inst.status_msg = MSG_SCHEDULING
            inst.pending = None
            return
        if inst.actual_status is None:
            inst.pending = (now + T_PROVISION, "loading")
        else:
            inst.status_msg = "Scheduling"
            inst.pending = (now + T_SCHEDULE, "loading")
        if self.hosts is not None:
            self.hosts.on_start(inst)

    def reboot(self, inst):
        now = self.clock.now()
        if inst.actual_status != "running":
            raise ApiError(400, "invalid_args", f"Instance {inst.id} is not running; cannot reboot.")
        inst.set_actual("rebooting", now)
        self._enter(inst, "rebooting", now)
        if self.hosts is not None:
            self.hosts.on_reboot(inst)

    def recycle(self, inst):
        now = self.clock.now()
        inst.intended_status = "running"
        inst.next_state = "running"
        if getattr(inst, "host_down", False):
            return  # nothing reaches an offline host; it restarts towards running when it returns
        inst.set_actual("loading", now)
        inst.status_msg = f"Recycling: pulling {inst.image}"
        inst.pending = (now + T_LOAD, "running")
        if self.hosts is not None:
            self.hosts.on_recycle(inst)

    def destroy(self, inst):
        now = self.clock.now()
        self._advance(inst, now)
        inst.set_actual("destroyed", now)   # closes an open GPU interval
        inst.actual_status = "destroyed"
        inst.intended_status = "destroyed"
        inst.cur_state = "unloaded"
        inst.next_state = "unloaded"
        inst.pending = None
        inst.destroyed_at = now
        # destroy frees the machine: the offer is listed again
        self.rented.pop(inst.offer["id"], None)
        self._available = None
        if self.hosts is not None:
            self.hosts.on_destroy(inst)

    def force(self, inst, actual_status, hold=True):
        """/_sim/ control: put an instance into a state (and keep it there when hold)."""
        now = self.clock.now()
        self._advance(inst, now)
        inst.pending = None
        if actual_status == "scheduling":
            inst.set_actual("stopped", now)
            inst.intended_status = "running"
            inst.cur_state = "stopped"
            inst.next_state = "running"
            inst.status_msg = MSG_SCHEDULING
        elif actual_status is not None:
            inst.set_actual(actual_status if actual_status != "null" else None, now)
            if actual_status in ("running", "loading", "null"):
                inst.intended_status = "running"
            if actual_status == "running":
                inst.cur_state = "running"
                inst.status_msg = f"success, running {inst.image}/ssh"
                if self.hosts is not None:
                    self.hosts.on_running(inst)
            elif actual_status in ("stopped", "exited", "offline", "unknown"):
                inst.status_msg = {"exited": "Container exited", "offline": "Host offline",
                                   "unknown": "No recent heartbeat from host"}.get(actual_status, "Stopped.")
        inst.hold = bool(hold)
        if not inst.hold:
            # released: continue towards what the user asked for
            if inst.intended_status == "running" and inst.actual_status != "running":
                if inst.actual_status == "loading":
                    inst.pending = (now + T_RESTART_LOAD, "running")
                elif inst.actual_status is None:
                    inst.pending = (now + T_PROVISION, "loading")
                elif inst.actual_status in ("offline", "unknown", "exited", "rebooting"):
                    inst.pending = (now + T_SCHEDULE, "loading")
            elif inst.intended_status == "stopped" and inst.actual_status not in ("stopped",):
                inst.pending = (now + T_STOP, "stopped")

    # --- ssh keys -------------------------------------------------------------------------
    def add_account_key(self, text):
        key = {"id": self.next_key_id, "user_id": self.user["id"], "key": text, "public_key": text,
               "created_at": self.clock.now(), "deleted_at": None}
        self.next_key_id += 1
        self.ssh_keys.append(key)
        return key

    def key_id_for(self, text):
        """Stable id for a key text: the account key's id, or one minted for instance-only keys."""
        for k in self.ssh_keys:
            if k["key"] == text:
                return k["id"]
        if text not in self.extra_key_ids:
            self.extra_key_ids[text] = self.next_key_id
            self.next_key_id += 1
        return self.extra_key_ids[text]

    # --- persistence ----------------------------------------------------------------------
    def save(self):
        if not self.state_file:
            return
        data = {
            "now": self.clock.now(), "seed": self.seed, "rented": {str(k): v for k, v in self.rented.items()},
            "taken": sorted(self.taken), "unavailable": sorted(self.unavailable),
            "instances": [i.dump() for i in self.instances.values()],
            "next_instance_id": self.next_instance_id, "user": self.user, "credit_base": self.credit_base,
            "payments": self.payments, "ssh_keys": self.ssh_keys, "next_key_id": self.next_key_id,
            "extra_key_ids": self.extra_key_ids, "bid_floor": {str(k): v for k, v in self.bid_floor.items()},
            "create_failures": self.create_failures, "team_scoped": self.team_scoped,
            "ignore_target_state": self.ignore_target_state,
            "catalogue_ids": [o["id"] for o in self.catalogue],
        }
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.state_file)

    def load(self, path):
        with open(path) as f:
            data = json.load(f)
        # the clock resumes where it stopped: no time passes while the simulator is down
        self.clock = Clock(self.clock.speed, start=data["now"])
        self.rented = {int(k): v for k, v in data["rented"].items()}
        self.taken = set(data["taken"])
        self.unavailable = set(data["unavailable"])
        self.instances = {d["id"]: Instance.load(d) for d in data["instances"]}
        self.next_instance_id = data["next_instance_id"]
        self.user = data["user"]
        self.credit_base = data["credit_base"]
        self.payments = data["payments"]
        self.ssh_keys = data["ssh_keys"]
        self.next_key_id = data["next_key_id"]
        self.extra_key_ids = data.get("extra_key_ids", {})
        self.bid_floor = {int(k): v for k, v in data.get("bid_floor", {}).items()}
        self.create_failures = list(data.get("create_failures", []))
        self.team_scoped = bool(data.get("team_scoped", False))
        self.ignore_target_state = bool(data.get("ignore_target_state", False))

    # --- helpers for tokens ---------------------------------------------------------------
    @staticmethod
    def new_token():
        return secrets.token_hex(16)
