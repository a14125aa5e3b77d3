"""Layers compressed while the steps after them run.

A step's commit needs only its layer's diff ID (the sha256 of the tar): it
names the next snapshot, and the steps after it go on over that snapshot.  So
an overlay commit of a big layer (orca.snapshot.INLINE_LAYER) returns once
its tar is made and hashed, while a thread of the layer's own
(umoci_py.layer.blob.LayerSink) still compresses it into its blob.  Until the
blob is stored the layer's descriptor is a placeholder, {PENDING: diff ID}.
A cache record that holds one is written once every layer it names is
stored (a record never names a missing blob), and the build waits for all of
them before it exports: what leaves the build never holds a placeholder.

One thread here waits for the layers in turn and writes the records that
waited for them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

PENDING = "orca.pending-layer"


def is_pending(desc: dict) -> bool:
    return PENDING in desc


class LayerJobs:
    def __init__(self):
        self._lock = threading.Lock()
        self._stored = threading.Condition(self._lock)
        self._done: dict[str, dict] = {}              # diff ID -> descriptor
        self._failed: dict[str, BaseException] = {}
        self._records: list[tuple] = []  # (store, key, description, image, chain) waiting
        self._jobs = None  # a queue.SimpleQueue, made with the thread
        self._thread: threading.Thread | None = None
        self._put_error: BaseException | None = None

    def submit(self, diff_id: str, stored: Callable[[], dict]) -> dict:
        """The placeholder of a layer whose descriptor stored() returns once its blob is stored."""
        with self._lock:
            if self._thread is None:
                # here, not at start: a fully cached build stores no layer,
                # and importing queue cost its start ~0.5 ms
                import queue

                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._work, args=(self._jobs,), name="layer-jobs", daemon=True)
                self._thread.start()
        self._jobs.put((diff_id, stored))
        return {PENDING: diff_id}

    def _work(self, jobs) -> None:
        while (job := jobs.get()) is not None:
            diff_id, stored = job
            try:
                outcome = stored()
            except BaseException as err:  # noqa: BLE001 - raised where the layer is needed
                outcome = err
            with self._lock:
                if isinstance(outcome, BaseException):
                    self._failed[diff_id] = outcome
                else:
                    self._done[diff_id] = outcome
                self._stored.notify_all()
                ready = [(r, self._resolved(r[3])) for r in self._records if self._ready(r[3])]
                self._records = [r for r in self._records if not self._ready(r[3])]
            for (store, key, description, _, chain), image in ready:
                if image is not None:
                    self._put(store, key, description, image, chain)

    def _put(self, store, key, description, image, chain) -> None:
        try:
            store.put(key, description, image, chain)
        except BaseException as err:  # noqa: BLE001 - a record is a cache entry: finish() raises it
            self._put_error = self._put_error or err

    def _ready(self, image: dict) -> bool:
        """Whether every layer of image is stored (or will never be)."""
        return all(d[PENDING] in self._done or d[PENDING] in self._failed
                   for d in image["layers"] if is_pending(d))

    def _resolved(self, image: dict) -> dict | None:
        if any(is_pending(d) and d[PENDING] in self._failed for d in image["layers"]):
            return None
        return {**image, "layers": [self._done[d[PENDING]] if is_pending(d) else d for d in image["layers"]]}

    def record(self, store, key: str, description: str, image: dict, chain: str) -> None:
        """store.put the step's record now, or once the layers it names are
        stored; never if one of them failed.  Meanwhile get() finds it, so a
        later step of this build with the same key is a hit all the same.
        image is copied: the stage goes on changing its config."""
        image = copy.deepcopy(image)
        with self._lock:
            if not self._ready(image):
                self._records.append((store, key, description, image, chain))
                return
            resolved = self._resolved(image)
        if resolved is not None:
            store.put(key, description, resolved, chain)  # in the step's thread: its errors are the step's

    def get(self, store, key: str) -> dict | None:
        """store.get(key), or the record of this build still waiting for its layers."""
        with self._lock:
            for _, k, description, image, chain in self._records:
                if k == key:
                    return {"key": key, "description": description, "image": copy.deepcopy(image), "chain": chain}
        return store.get(key)

    def resolve(self, layers: list[dict]) -> list[dict]:
        """layers with every placeholder replaced by its stored descriptor
        (waiting for it); a failed layer raises its error."""
        out = []
        for desc in layers:
            if is_pending(desc):
                diff_id = desc[PENDING]
                with self._lock:
                    self._stored.wait_for(lambda: diff_id in self._done or diff_id in self._failed)
                    if diff_id in self._failed:
                        raise self._failed[diff_id]
                    desc = self._done[diff_id]
            out.append(desc)
        return out

    def finish(self) -> None:
        """Wait for every layer and the records waiting on them."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
        if self._put_error is not None:
            raise self._put_error

