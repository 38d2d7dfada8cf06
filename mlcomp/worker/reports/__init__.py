"""MLComp's report builders (``mlcomp.worker.reports``), which its example executors create in
``create_base`` and feed from ``plot``/``plot_final``::

    from mlcomp.worker.reports.classification import ClassificationReportBuilder

    self.builder = ClassificationReportBuilder(session=self.session, task=self.task,
                                               layout=self.layout, name=self.name)
    self.builder.create_base()
    self.builder.process_pred(imgs=imgs, preds=preds, targets=y)
    self.builder.process_scores({"accuracy": score})

MLComp wrote report rows (images, series, a confusion matrix) to its database. Here a builder
keeps numbers: ``self.session`` of an :class:`~mlcomp.worker.executors.equation.Equation` is a
:class:`ReportSession` that collects the builders, and the executor puts their summaries in the
task's result, which the task page shows; named scores are also reported as the task's metrics.
"""
from mlcomp.worker.reports.classification import ClassificationReportBuilder, classification_summary
from mlcomp.worker.reports.session import ReportSession

__all__ = ["ClassificationReportBuilder", "ReportSession", "classification_summary"]
