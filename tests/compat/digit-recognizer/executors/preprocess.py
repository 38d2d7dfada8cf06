import numpy as np

from mlcomp.worker.executors import Executor


@Executor.register
class Preprocess(Executor):
    """Writes train and valid splits of two blobs into the project's data folder (data/)."""

    def __init__(self, rows: int):
        self.rows = rows

    @classmethod
    def _from_config(cls, executor: dict, config: dict, additional_info: dict):
        return cls(rows=executor["rows"])

    def work(self):
        self.step.start(1, "blobs")
        rng = np.random.RandomState(0)
        targets = np.arange(self.rows) % 2
        features = (rng.randn(self.rows, 4) + targets[:, None] * 2.0).astype("float32")
        half = self.rows // 2
        np.savez("data/train.npz", x=features[:half], y=targets[:half])
        np.savez("data/valid.npz", x=features[half:], y=targets[half:])
        self.info(f"wrote {self.rows} rows to data/")
        self.step.end(1)
        return {"rows": self.rows}
