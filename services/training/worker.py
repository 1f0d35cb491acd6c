"""`python -m services.training.worker job.json`: one training attempt, reported as JSON lines.

The service runs this in a subprocess so training never blocks its event loop and a cancel or a
crash kills only this process. Protocol on stdout (everything else goes to stderr): `started`,
`progress`, `checkpoint` (already uploaded to the artifact store), then one of `done`,
`cancelled` or `error`. SIGTERM asks for a stop at the next step boundary.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from services.training.job import (
    ADAPTER_METHODS,
    Cancelled,
    Done,
    Failed,
    TrainingJob,
    WorkerMessage,
    portable_adapter_config,
)

FINAL_DIR = "final"


Report = Callable[[WorkerMessage], None]


class Reporter:
    """Writes each message as one JSON line on the protocol stream (the real stdout)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, message: WorkerMessage) -> None:
        line = message.line()
        with self.lock:
            self.out.write(line)
            self.out.flush()


def _die_with_parent() -> None:
    """A worker whose service was killed must not train on alone (Linux: PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent or parent == 1:
        os._exit(3)


def run(job: TrainingJob, report: Report, stop: threading.Event) -> None:
    import torch
    from transformers.trainer_callback import PrinterCallback

    from services.core.ml.models import load_tokenizer
    from services.training.callback import ReportingCallback
    from services.training.methods import build_trainer, use_cuda

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = load_tokenizer(job.base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    callback = ReportingCallback(job, report, stop)
    trainer = build_trainer(job, tokenizer, [callback])
    # progress goes out as structured `progress` messages; Trainer's own log dicts are noise
    trainer.remove_callback(PrinterCallback)
    if use_cuda(job):
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=job.resume_from)
    runtime = time.monotonic() - started
    if stop.is_set():
        report(Cancelled(step=trainer.state.global_step))
        return
    final = Path(job.output_dir) / FINAL_DIR
    if job.recipe.method in ADAPTER_METHODS:
        trainer.model.save_pretrained(final)
        portable_adapter_config(final, job.recipe.base_model)
    else:
        trainer.model.save_pretrained(final)
        tokenizer.save_pretrained(final)
    tokens = float(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    report(
        Done(
            model_dir=str(final),
            steps=trainer.state.global_step,
            first_loss=callback.losses[0] if callback.losses else None,
            last_loss=callback.losses[-1] if callback.losses else None,
            train_loss=float(result.training_loss),
            final_eval_loss=callback.eval_losses.get(int(trainer.state.global_step)),
            best_at_end=bool(trainer.args.load_best_model_at_end),
            runtime_s=runtime,
            tokens=tokens,
            tokens_per_second=tokens / runtime if runtime > 0 else None,
            peak_memory_mb=_peak_memory_mb(use_cuda(job)),
        )
    )


def _peak_memory_mb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.training.worker JOB.json", file=sys.stderr)
        return 2
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not corrupt the protocol
    sys.stdout = sys.stderr
    report = Reporter(out)
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        job = TrainingJob.model_validate_json(Path(args[0]).read_text())
        run(job, report, stop)
    except Exception as error:  # noqa: BLE001  (reported to the service, which decides: fail or retry)
        report(Failed(reason=_reason(error), message=f"{type(error).__name__}: {error}"))
        return 1
    return 0


def _reason(error: Exception) -> str:
    text = str(error).lower()
    if "out of memory" in text:
        return "out-of-memory"
    return "training-error"


if __name__ == "__main__":
    sys.exit(main())
