"""``safitty.Safict.load(path).get(key, ...)``, as v20.02's CI snippets read ``_metrics.json``."""
import json


class Safict:
    def __init__(self, data):
        self.data = data

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls(json.load(f))

    def get(self, *keys, default=None):
        value = self.data
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value
