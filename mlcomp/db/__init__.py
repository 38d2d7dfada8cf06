"""The store: typed models, sessions and migrations. Other packages import only these names."""
from mlcomp.db.models import (
    FINISHED,
    Attempt,
    Base,
    Checkpoint,
    Computer,
    Dag,
    LogLine,
    Metric,
    Model,
    ModelRun,
    Pipe,
    PipeFile,
    Preemption,
    Project,
    ReportJournal,
    ResourceSample,
    SearchRung,
    SearchTrial,
    SnapshotBlob,
    SnapshotFile,
    Supervisor,
    Task,
    TaskDependency,
    TaskStatus,
    UiSession,
    as_utc,
    utcnow,
)
from mlcomp.db.session import immediate, make_engine, make_sessionmaker, open_store, upgrade

__all__ = [
    "FINISHED", "Attempt", "Base", "Checkpoint", "Computer", "Dag", "LogLine", "Metric", "Model", "ModelRun",
    "Pipe", "PipeFile", "Preemption", "Project", "ReportJournal",
    "ResourceSample", "SearchRung", "SearchTrial", "SnapshotBlob", "SnapshotFile", "Supervisor", "Task",
    "TaskDependency", "TaskStatus", "UiSession", "as_utc", "utcnow",
    "immediate", "make_engine", "make_sessionmaker", "open_store", "upgrade",
]
