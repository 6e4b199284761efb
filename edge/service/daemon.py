"""``edge run --service``: the pipeline as a systemd service (Type=notify).

- READY=1 once the first frame went through the model and reached the sinks, not before.
- WATCHDOG=1 from frame progress (:class:`~edge.service.watchdog.FrameWatchdog`); STATUS= with
  FPS, backend and counters every ``[service] status_interval`` seconds, and a stall note.
- EXTEND_TIMEOUT_USEC while the model loads, so a slow first load is not killed as a hang.
- SIGTERM/SIGINT: STOPPING=1, frames in flight are decoded and published, sinks flushed and
  closed, exit 0. SIGHUP: re-read the configuration and reload the model; a configuration that
  fails to validate or to load is logged and the running one is kept.
- The source is wrapped in a :class:`~edge.capture.reconnect.ReconnectingSource` (``[service]
  reconnect``); an Edge TPU detector that fails is retried every ``[service] tpu_retry`` seconds
  while its CPU twin stands by (:mod:`edge.pipeline`'s standby detector).

The pipeline runs in a worker thread; the main thread handles signals and status.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

from edge.capture.base import Source
from edge.capture.reconnect import Backoff, ReconnectingSource
from edge.config import Config
from edge.errors import EdgeError
from edge.service.journal import use_journal_priorities
from edge.service.notify import Notifier, watchdog_period
from edge.service.watchdog import FrameWatchdog, StatusReporter, status_line
from edge.telemetry.stats import PipelineStats

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DRAIN_TIMEOUT = 20.0   # seconds to finish frames in flight; below the unit's TimeoutStopSec
# While the source reconnects the watchdog is fed (the process is recovering, not hung), unless one
# open() has been running this long: then it is hung, and systemd's restart is the remedy.
OPEN_HANG = 60.0


def precheck(config: Config) -> None:
    """The cheap part of :func:`edge.app.assemble`: raises EdgeError for a config that cannot run."""
    from edge.app import camera_plans, check_all
    from edge.capture import make_source

    check_all(config)
    for plan in camera_plans(config):
        make_source(plan.config.source)


def check_running_geometry(config: Config, sizes: dict[str, tuple[int, int]]) -> None:
    """Zones and lines of ``config`` against the frame sizes the running cameras deliver (a reload
    that names the same cameras): a zone outside the picture is refused before anything stops."""
    from edge.app import camera_plans
    from edge.events.geometry import check_cameras, check_geometry, for_camera

    if not config.events.enabled:
        return
    plans = camera_plans(config)
    if config.cameras or sizes:
        check_cameras(config.events.zones, config.events.lines,
                      [plan.name for plan in plans] if config.cameras else list(sizes))
    for plan in plans:
        name = plan.name or next(iter(sizes), "")
        size = sizes.get(name)
        if size is not None:
            check_geometry(*for_camera(config.events.zones, config.events.lines, name), *size)


def note_appending(path: str) -> bool:
    """Log that events go after what ``path`` already holds (the sink appends, never truncates)."""
    try:
        size = os.path.getsize(path) if path else 0
    except OSError:
        return False        # not there yet: it is created
    if size:
        log.info("appending detection events to %s, which already holds %d bytes", path, size)
    return size > 0


class Daemon:
    """Runs, reloads and stops the pipeline; ``load_config`` re-reads the file (and flags) on SIGHUP."""

    def __init__(self, load_config: Callable[[], Config], notifier: Notifier | None = None,
                 stats: PipelineStats | None = None):
        self.load_config = load_config
        self.notifier = notifier or Notifier()
        self.stats = stats or PipelineStats()
        self.watchdog = FrameWatchdog(self.notifier, watchdog_period())
        self.ready = threading.Event()
        self.reloads = 0
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._source_stop = threading.Event()
        self._sources: list[ReconnectingSource] = []
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    # signals: set flags and wake the main loop; the work happens there
    def _on_signal(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info("%s received: reloading the configuration", name)
            self._reload_requested = True
        else:
            log.info("%s received: finishing frames in flight, then exiting", name)
            self._stop_requested = True
        self._wake.set()

    def _on_published(self, _result) -> None:
        if not self.ready.is_set():
            self.ready.set()
            snap = self.stats.snapshot()
            log.info("first frame processed on %s: ready", snap.backend)
            self.notifier.ready(status_line(snap))
        self.watchdog()

    def _assemble(self, config: Config, prepared=None):
        from edge.app import assemble

        self._source_stop = threading.Event()
        self._sources = []
        stop = self._source_stop

        def wrap(source: Source) -> Source:
            if not config.service.reconnect:
                return source
            backoff = Backoff(config.service.reconnect_initial, config.service.reconnect_max)
            wrapped = ReconnectingSource(source, backoff, stop=stop,
                                         on_reconnect=lambda: self.stats.count("reconnects"))
            self._sources.append(wrapped)
            return wrapped

        self.notifier.extend_timeout(config.service.load_timeout)
        self.notifier.status(f"loading {config.model.path or 'the default model'}")
        note_appending(config.output.jsonl)
        assembly = assemble(config, stats=self.stats, wrap_source=wrap, prepared=prepared, service=True)
        pipeline = assembly.pipeline
        pipeline.on_published.append(self._on_published)
        log.info("service: %s, model %s, %s; detectors %s",
                 ", ".join(f"camera {c.name} ({c.source.name})" if config.cameras else f"source {c.source.name}"
                           for c in pipeline.cameras),
                 assembly.loaded.model.path.name, assembly.loaded.reason, self.stats.backend)
        return assembly

    def _start(self, assembly) -> None:
        self._error = None

        def work() -> None:
            try:
                assembly.pipeline.run()
            except BaseException as exc:  # reported by the main thread, which decides the exit status
                self._error = exc
            finally:
                self._wake.set()

        self._worker = threading.Thread(target=work, name="pipeline", daemon=True)
        self._worker.start()

    def _halt(self, assembly) -> bool:
        """Stop the pipeline, letting frames in flight finish; False if it did not stop in time."""
        self._source_stop.set()
        assembly.pipeline.stop()
        assert self._worker is not None
        self._worker.join(DRAIN_TIMEOUT)
        if self._worker.is_alive():
            log.error("the pipeline did not stop within %.0f s (a stuck invoke or source read?)", DRAIN_TIMEOUT)
            return False
        return True

    def _reload(self, config: Config, assembly):
        """Returns the (config, assembly) that runs after a SIGHUP.

        A transaction: the new configuration is read and checked, and its model loaded and run once,
        while the running pipeline goes on; whatever fails there (an EdgeError or anything else a
        broken model or manifest raises) keeps the running pipeline, logged, in STATUS and counted.
        Only then is the old pipeline stopped and the new one started on the prepared model.
        """
        from edge.app import prepare_all

        self._reload_requested = False
        try:
            new = self.load_config()
            precheck(new)
            check_running_geometry(new, assembly.pipeline.frame_sizes)
            self.notifier.status("reload: loading the new model while the running one goes on")
            prepared = prepare_all(new, service=True)
        except Exception as exc:   # the transaction's boundary: nothing may kill the running pipeline
            reason = exc.message if isinstance(exc, EdgeError) else f"unexpected {type(exc).__name__}: {exc}"
            log.error("reload refused, keeping the running configuration: %s", exc,
                      exc_info=not isinstance(exc, EdgeError))
            self.stats.count("reloads_refused")
            self.notifier.status(f"reload refused ({reason}); running the previous configuration")
            return config, assembly
        self.notifier.reloading()
        if not self._halt(assembly):
            prepared.close()
            raise SystemExit(1)
        try:
            assembly = self._assemble(new, prepared)
            config = new
            self.reloads += 1
            log.info("configuration reloaded (#%d)", self.reloads)
        except EdgeError as exc:      # e.g. the new source does not open: back to the old configuration
            log.error("reload failed, going back to the previous configuration: %s", exc)
            self.stats.count("reloads_refused")
            prepared.close()
            assembly = self._assemble(config)
        self._start(assembly)
        self.notifier.ready(f"reloaded; {status_line(self.stats.snapshot())}")
        return config, assembly

    def run(self) -> int:
        """Run until a stop signal (exit 0), the source's end (0) or a pipeline error (1)."""
        if use_journal_priorities():
            log.debug("logging to the journal with syslog priorities")
        previous = {s: signal.signal(s, self._on_signal) for s in (*STOP_SIGNALS, signal.SIGHUP)}
        try:
            config = self.load_config()
            assembly = self._assemble(config)
            reporter = StatusReporter(self.notifier, self.stats, config.service.status_interval)
            self._start(assembly)
            while True:
                self._wake.wait(min(1.0, config.service.status_interval))
                self._wake.clear()
                if self._stop_requested:
                    self.notifier.stopping("finishing frames in flight")
                    return 0 if self._halt(assembly) else 1
                if self._reload_requested:
                    config, assembly = self._reload(config, assembly)
                    reporter = StatusReporter(self.notifier, self.stats, config.service.status_interval)
                    continue
                assert self._worker is not None
                if not self._worker.is_alive():
                    return self._ended()
                note = self._recovering()
                if self.ready.is_set():
                    reporter.maybe_report(self.watchdog.stalled_for(), note=note)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            snap = self.stats.snapshot()
            log.info("service ends: %d frames inferred, %d published, %d dropped, %d reconnects, %d reloads",
                     snap.inferred, snap.published, snap.dropped, snap.reconnects, self.reloads)
            self.notifier.close()

    def _recovering(self) -> str:
        """Feed the watchdog while the source is being reopened; the STATUS note saying so."""
        source = next((s for s in self._sources if s.outage_since is not None), None)
        if source is None:
            return ""
        now = time.monotonic()
        if source.opening_since is None or now - source.opening_since < OPEN_HANG:
            self.watchdog.keepalive()
        return f"source lost {now - source.outage_since:.0f} s ago, reconnecting: {source.last_error}"

    def _ended(self) -> int:
        self.notifier.stopping("pipeline ended")
        if self._error is None:
            log.info("the source ended")
            return 0
        if isinstance(self._error, EdgeError):
            log.error("pipeline stopped: %s", self._error)
        else:
            log.error("pipeline failed", exc_info=self._error)
        return 1
