"""`retrain.requested`: resubmit the route's last approved dataset, with its recipe and gate policy.

The guardian (an objective or a drift check whose action is `retrain`), a critical incident on a
route whose policy says so, or an operator (`tuneline routes retrain`) asks for the next
generation; curation answers with a `dataset.approved` caused by the request, so training starts a
run on it exactly as on a fresh submission, and the registry records the whole lineage. Its id is
derived from the request's, so a redelivered request resubmits once (JetStream's duplicate window,
then the registry's unique key; training derives the run from the event id). The production
feedback the flywheel collects is mixed in by curation in a later issue; today the dataset is the
one the route was last approved with.
"""

from __future__ import annotations

import logging

from faststream.nats import NatsBroker

from schemas.dataset import DatasetApproved
from schemas.queries import DATASETS_APPROVED, ApprovedDatasetQuery
from schemas.slo import RetrainRequested
from services.core.artifacts import ArtifactStore
from services.core.messaging.delivery import HandlerContext, PermanentError
from services.core.messaging.rpc import RpcError, ask

log = logging.getLogger(__name__)


def resubmission(approved: DatasetApproved, request_id: str) -> DatasetApproved:
    """The approved dataset again, under a submission id of the request's own."""
    return approved.model_copy(update={"submission_id": f"retrain-{request_id[:24]}"})


class Retrainer:
    def __init__(self, store: ArtifactStore, broker: NatsBroker) -> None:
        self.store = store
        self.broker = broker

    async def on_retrain(self, event: RetrainRequested, ctx: HandlerContext) -> None:
        try:
            found = await ask(
                self.broker,
                DATASETS_APPROVED,
                ApprovedDatasetQuery(route=event.route, tenant=event.tenant),
                timeout=10.0,
            )
        except RpcError as error:
            if error.code == "not-found":  # nothing to resubmit: the dead-letter subject says why
                raise PermanentError(f"retrain of {event.route}: {error}") from None
            raise  # the registry is away: retried
        approved = DatasetApproved.model_validate(found.approved)
        if not self.store.exists(approved.manifest.key):
            raise PermanentError(
                f"retrain of {event.route}: the manifest {approved.manifest.key} of dataset "
                f"{approved.dataset_id[:12]} is gone from the artifact store; submit the dataset again"
            )
        again = resubmission(approved, ctx.envelope.id)
        await ctx.publish(again)
        log.info(
            "retrain of %s (%s, %s): dataset %s resubmitted as %s",
            event.route, event.trigger, event.reason, approved.dataset_id[:12], again.submission_id,
        )  # fmt: skip
