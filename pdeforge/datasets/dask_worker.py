"""Set-up of the local Dask workers that ``pdeforge generate --workers K`` starts.

Dask preloads this module in each worker process (``LocalCluster(preload=...)``, also in
a worker that its nanny restarts) and calls :func:`dask_setup`.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group, the worker
processes included: each then printed a KeyboardInterrupt traceback (about 65 lines for
two workers) above pdeforge's one-line "interrupted; finished shards are kept" message.
The workers ignore SIGINT: the main process, which gets it too, stops the run and closes
the cluster, which ends the workers.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: ignore SIGINT in this worker process (see the module)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
