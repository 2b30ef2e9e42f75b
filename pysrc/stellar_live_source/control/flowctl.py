"""flowctl registration: the service tells a control plane it exists and keeps
telling it how it is (``ENABLE_FLOWCTL=true``).

One background task per service (``Registrar``), started once the server
listens; nothing it does blocks or stops the service:

- register: ``flowctl.v1.ControlPlaneService/RegisterComponent``
  (``FLOWCTL_API=v1``) or the legacy ``flowctl.ControlPlane/Register``, and
  use the service ID the control plane returns;
- heartbeat every ``FLOWCTL_HEARTBEAT_INTERVAL`` with the numbers
  (``identity.numbers``) and, in v1, the readiness rule's status;
- a heartbeat answered ``NOT_FOUND`` (the control plane restarted and forgot
  the service): register again; any other failure, registration's too: try
  again after an exponential backoff with jitter, capped;
- the identity registered is read again at every heartbeat and registered
  again when it changed: registration may happen before the lake is open
  (status STARTING, no network in the metadata yet) and is completed once
  it is;
- every call has a deadline, and one call at most is in flight; ``stop``
  cancels the task and unregisters (v1) within a short bound.

Failures are logged when the state changes (registered, failing, recovered)
and then at most once a minute while they repeat.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from .. import api
from ..ops.config import Config
from .identity import Identity, as_strings, component_info

log = logging.getLogger("stellar_live_source.flowctl")

#: The longest wait between two attempts after failures (seconds).
BACKOFF_CAP = 30.0
#: A call's deadline is the heartbeat interval, within these bounds (seconds).
DEADLINE_MIN = 1.0
DEADLINE_MAX = 10.0
#: The most ``stop`` waits for UnregisterComponent (seconds).
UNREGISTER_TIMEOUT = 1.0
#: A repeated failure is logged again after this long (seconds).
REPEAT_LOG_EVERY = 60.0

V1 = "v1"
FORGOTTEN = "heartbeat just after registering"
LEGACY = "legacy"

#: What ``report`` returns: the readiness rule's status (``Readiness.status``) and the numbers.
Report = tuple[str, dict[str, float]]


class Registrar:
    """Registers ``describe()`` with the control plane at ``FLOWCTL_ENDPOINT``
    and heartbeats ``report()`` to it, in the background, until ``stop``."""

    def __init__(
        self,
        config: Config,
        describe: Callable[[], Identity],
        report: Callable[[], Report],
        rng: Callable[[], float] = random.random,
    ) -> None:
        fc = config.flowctl
        self.api = fc.api
        self.target = fc.endpoint
        self.interval = fc.heartbeat_interval
        self.deadline = min(max(self.interval, DEADLINE_MIN), DEADLINE_MAX)
        self.backoff_base = min(self.interval, 1.0)
        self.max_inflight = config.server.max_concurrent_streams
        self.describe = describe
        self.report = report
        self.rng = rng
        self.service_id: str | None = None  # the control plane's ID for this service, once registered
        self.registered: Identity | None = None  # what was registered
        self.registrations = 0  # successful ones
        self.heartbeats = 0  # successful ones
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None  # "registration: CODE" while failing
        self._logged_at = 0.0

    # -- lifecycle --
    def start(self) -> None:
        base_ms = max(int(self.backoff_base * 1000), 100)
        # gRPC's own reconnect backoff (up to 2 min by default) kept within ours,
        # so a control plane that comes back is reached at the next attempt.
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", base_ms),
                ("grpc.min_reconnect_backoff_ms", base_ms),
                ("grpc.max_reconnect_backoff_ms", int(BACKOFF_CAP * 1000)),
            ],
        )
        self._task = asyncio.ensure_future(self._run())
        log.info("flowctl: registering with %s (%s API) in the background", self.target, self.api)

    async def stop(self) -> None:
        """Stop heartbeating; once registered, a last heartbeat (STOPPING in v1)
        and, in v1, UnregisterComponent: both within UNREGISTER_TIMEOUT."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._channel is None:
            return
        try:
            if self.service_id is not None:
                await asyncio.wait_for(self._farewell(), UNREGISTER_TIMEOUT)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            why = f"{exc.code().name} {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else "no answer"
            log.warning("flowctl: saying goodbye to %s: %s", self.target, why)
        finally:
            self.service_id = None
            channel, self._channel = self._channel, None
            await channel.close(None)

    async def _farewell(self) -> None:
        await self._heartbeat()
        if self.api == V1 and self.service_id is not None:
            await self._unregister(self.service_id)

    async def _unregister(self, service_id: str) -> None:
        request = api.message("flowctl.v1.UnregisterRequest")(service_id=service_id)
        await self._call("UnregisterComponent", request, empty_pb2.Empty)
        log.info("flowctl: unregistered %s from %s", service_id, self.target)

    # -- the loop --
    async def _run(self) -> None:
        failures = 0
        while True:
            fresh = self.service_id is None or self.describe() != self.registered
            if fresh:
                try:
                    await self._register()
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    self._failed("registration", exc, failures)
                    await asyncio.sleep(self._backoff(failures))
                    continue
            try:
                await self._heartbeat()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    self.service_id = None
                    if fresh:  # forgotten at once: backed off and logged like a failure, not a loop
                        failures += 1
                        self._failed(FORGOTTEN, exc, failures)
                        await asyncio.sleep(self._backoff(failures))
                    else:
                        log.warning("flowctl: %s forgot this service: registering again", self.target)
                    continue
                failures += 1
                self._failed("heartbeat", exc, failures)
                await asyncio.sleep(self._backoff(failures))
                continue
            if self._failing is not None:
                log.info("flowctl: heartbeats to %s resumed (%s failed before)", self.target, self._failing)
                self._failing = None
            failures = 0
            await asyncio.sleep(self.interval)

    async def _register(self) -> None:
        me = self.describe()
        if self.api == V1:
            component = component_info(me, me.service_id)
            request = api.message("flowctl.v1.RegisterRequest")(component=component, component_id=me.component_id)
            answer = await self._call("RegisterComponent", request, api.message("flowctl.v1.RegisterResponse"))
        else:
            request = api.message("flowctl.ServiceInfo")(
                service_id=me.service_id,
                service_type=api.POOL.FindEnumTypeByName("flowctl.ServiceType")
                .values_by_name["SERVICE_TYPE_SOURCE"]
                .number,
                input_event_types=[],
                output_event_types=list(me.output_event_types),
                health_endpoint=me.health_endpoint,
                max_inflight=self.max_inflight,
                metadata=me.metadata,
                component_id=me.component_id,
            )
            answer = await self._call("Register", request, api.message("flowctl.RegistrationAck"))
        again, before = self.service_id is not None, self.service_id
        self.service_id = answer.service_id or me.service_id
        if self.api == V1 and before and before != self.service_id:
            # Registered anew under another ID (the identity changed): the old entry is not left behind.
            await self._unregister(before)
        self.registered = me
        self.registrations += 1
        # Said once: not again while the control plane forgets each registration at once.
        repeat = self._failing is not None and self._failing.startswith(FORGOTTEN)
        log.log(
            logging.DEBUG if repeat else logging.INFO,
            "flowctl: %s with %s as %s%s",
            "registered again" if again else "registered",
            self.target,
            self.service_id,
            "" if me.metadata.get("network") else " (the lake is not open yet)",
        )

    async def _heartbeat(self) -> None:
        status, values = self.report()
        if self.api == V1:
            request = api.message("flowctl.v1.HeartbeatRequest")(
                service_id=self.service_id,
                status=api.POOL.FindEnumTypeByName("flowctl.v1.HealthStatus")
                .values_by_name[f"HEALTH_STATUS_{status}"]
                .number,
                metrics=as_strings(values),
            )
        else:
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            request = api.message("flowctl.ServiceHeartbeat")(service_id=self.service_id, timestamp=now, metrics=values)
        await self._call("Heartbeat", request, empty_pb2.Empty)
        self.heartbeats += 1

    async def _call(self, method: str, request: Any, answer: Any) -> Any:
        service = api.FLOWCTL_V1_SERVICE if self.api == V1 else api.FLOWCTL_LEGACY_SERVICE
        assert self._channel is not None
        call: Any = self._channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=answer.FromString,
        )
        return await call(request, timeout=self.deadline)

    # -- waits and logs --
    def _backoff(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row: doubling from the
        base, capped, with jitter (half of it random)."""
        ceiling = min(self.backoff_base * 2 ** min(failures - 1, 30), BACKOFF_CAP)
        return ceiling * (0.5 + 0.5 * self.rng())

    def _failed(self, what: str, exc: grpc.aio.AioRpcError, failures: int) -> None:
        state = f"{what}: {exc.code().name}"
        now = time.monotonic()
        if state != self._failing or now - self._logged_at >= REPEAT_LOG_EVERY:
            log.warning(
                "flowctl: %s with %s failed (%s %s)%s; trying again in the background",
                what,
                self.target,
                exc.code().name,
                exc.details(),
                "" if failures == 1 else f", {failures} times in a row",
            )
            self._failing = state
            self._logged_at = now
        else:
            log.debug("flowctl: %s failed again (%s), %d times in a row", what, exc.code().name, failures)
