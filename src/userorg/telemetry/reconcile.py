"""The instrumentation of one reconciliation run, ready for the reconciler worker.

``with reconcile_run(tracing, org_id=...):`` opens the ``identity.reconcile.run`` span, times
the run into ``userorg_reconcile_run_duration_seconds`` and counts it in
``userorg_reconcile_runs_total{outcome="succeeded"|"failed"}`` (an exception is a failure and
propagates). The ``ReconcileFailures`` alert reads that counter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.trace import StatusCode

from userorg.telemetry.metrics import RECONCILE_DURATION, RECONCILE_RUNS
from userorg.telemetry.tracing import RECONCILE_RUN_SPAN, Tracing


@contextmanager
def reconcile_run(tracing: Tracing, *, org_id: str) -> Iterator[None]:
    started = time.perf_counter()
    with tracing.span(RECONCILE_RUN_SPAN, {"userorg.org_id": org_id}) as span:
        try:
            yield
        except BaseException as error:
            RECONCILE_RUNS.labels("failed").inc()
            if span is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(StatusCode.ERROR)
            raise
        else:
            RECONCILE_RUNS.labels("succeeded").inc()
        finally:
            RECONCILE_DURATION.observe(time.perf_counter() - started)
