"""``ChronompiRadio``: a Parsl monitoring radio whose senders record straight into chronompi.

A radio (``parsl.monitoring.radios.base.RadioConfig``) carries worker-side
messages (WORKER_TASK_INFO, RESOURCE_INFO) from where tasks run back to the
monitoring hub. When a task runs in a process that is itself a chronompi
client -- the driver rank (ThreadPoolExecutor), or another client rank of
the MPI job that executes Parsl tasks -- the sender logs the message into the
chronicle directly, with that process's client (see
:func:`chronompi.parsl.register_client`): nothing travels back to the driver.

Anywhere else (an HTEX worker, Parsl's forked per-task resource monitor, a
process without a registered client) ``create_sender`` returns the sender of
the ``fallback`` radio, whose receiver this radio starts on the submit side
and which feeds the hub's queue as usual. With no fallback it raises
:class:`RadioError`.

The config is picklable (it travels to workers with every task): it holds
the chronicle name and the fallback config only.
"""

from __future__ import annotations

from multiprocessing.queues import Queue
from typing import Any

from parsl.monitoring.radios.base import MonitoringRadioReceiver, MonitoringRadioSender, RadioConfig
from parsl.utils import RepresentationMixin

from .sink import DEFAULT_CHRONICLE, ChronicleSink, ParslMonitoringError, registered_client, sink_for


class RadioError(ParslMonitoringError):
    """A ChronompiRadio sender cannot be made in this process."""


class ChronompiRadioSender(MonitoringRadioSender):
    def __init__(self, sink: ChronicleSink) -> None:
        self.sink = sink

    def send(self, message: object) -> None:
        self.sink.record(message)


class ChronompiRadioReceiver(MonitoringRadioReceiver):
    """Nothing to receive for direct senders; shuts the fallback's receiver down."""

    def __init__(self, fallback: MonitoringRadioReceiver | None) -> None:
        self.fallback = fallback

    def shutdown(self) -> None:
        if self.fallback is not None:
            self.fallback.shutdown()


class FallbackRadio(RadioConfig, RepresentationMixin):
    """A radio whose senders record directly where they can and use ``fallback``'s sender elsewhere."""

    fallback: RadioConfig | None

    def create_receiver(self, *, run_dir: str, resource_msgs: Queue) -> MonitoringRadioReceiver:
        inner = None
        if self.fallback is not None:
            inner = self.fallback.create_receiver(run_dir=run_dir, resource_msgs=resource_msgs)
        return ChronompiRadioReceiver(inner)

    def fallback_sender(self, why: str) -> MonitoringRadioSender:
        """The fallback's sender, or :class:`RadioError` saying ``why`` there is no direct one."""
        if self.fallback is not None:
            return self.fallback.create_sender()
        raise RadioError(f"{type(self).__name__}: {why}, and the radio has no fallback; {self.fallback_hint}")

    fallback_hint = "give one, e.g. fallback=HTEXRadio()"


class ChronompiRadio(FallbackRadio):
    """``HighThroughputExecutor(remote_monitoring_radio=ChronompiRadio(fallback=HTEXRadio()))`` and the like."""

    fallback_hint = "give one, e.g. ChronompiRadio(fallback=HTEXRadio())"

    def __init__(self, chronicle: str = DEFAULT_CHRONICLE, fallback: RadioConfig | None = None) -> None:
        self.chronicle = chronicle
        self.fallback = fallback

    def create_sender(self) -> MonitoringRadioSender:
        client = registered_client()
        if client is not None:
            return ChronompiRadioSender(sink_for(client, self.chronicle))
        return self.fallback_sender(
            "this process has no chronompi client registered (chronompi.parsl.register_client(client) on a client rank)"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"chronicle": self.chronicle, "fallback": self.fallback}
