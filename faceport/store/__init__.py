"""Persistence: SQLAlchemy 2 models, repositories and Alembic migrations.

Open one :class:`Store` per process with :func:`open_store` (it migrates to head) and
pass its sessions to the repository functions::

    store = open_store(settings.resolved_database_url)
    with store.session() as session:
        job = create_job(session=session, kind="video", params={"fps": 15})
"""

from faceport.store.db import Store, head_revision, normalize_url, open_store
from faceport.store.jobs import (
    JobRecord,
    cancel_job,
    claim_job,
    complete_job,
    count_jobs,
    count_jobs_by_state,
    create_job,
    fail_job,
    get_job,
    list_jobs,
    orphaned_jobs,
    recover_interrupted_jobs,
    renew_lease,
    start_job,
    update_progress,
)
from faceport.store.models import TERMINAL_STATES, Base, Job, JobState

__all__ = [
    "TERMINAL_STATES",
    "Base",
    "Job",
    "JobRecord",
    "JobState",
    "Store",
    "cancel_job",
    "claim_job",
    "complete_job",
    "count_jobs",
    "count_jobs_by_state",
    "create_job",
    "fail_job",
    "get_job",
    "head_revision",
    "list_jobs",
    "normalize_url",
    "open_store",
    "orphaned_jobs",
    "recover_interrupted_jobs",
    "renew_lease",
    "start_job",
    "update_progress",
]
