"""mlcomp: a self-hosted orchestrator for deep-learning experiments."""
from setuptools import find_packages, setup

setup(
    name="mlcomp",
    version="0.1.0",
    description="DAGs of deep-learning tasks, a GPU-aware supervisor, a stage-based PyTorch runner and a web UI",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mlcomp", "mlcomp.*", "executors", "executors.*", "ui", "ui.*"]),
    include_package_data=True,
    package_data={
        "mlcomp.db": ["migrations/*.py", "migrations/*.mako", "migrations/versions/*.py"],
        "mlcomp.runner.compat": ["*.json"],  # Catalyst 20.x's surface (mlcomp.runner.compat.derive)
        "ui": ["templates/*.html", "templates/*/*.html", "static/*", "static/*/*", "openapi.json"],
    },
    install_requires=[
        "torch>=2.1",
        "numpy",
        "pyyaml>=6",
        "click>=8.1",
        "networkx>=3",
        "pathspec>=0.12",
        "sqlalchemy>=2.0",
        "alembic>=1.12",
        "apscheduler>=3.10,<4",
        "redis>=5",
        "flask>=3",
        "waitress>=3",
        "plotly>=5",
        "pygments>=2.15",
        "tqdm>=4.60",
        "psutil>=5.9",
        "scikit-learn>=1.3",
        "psycopg[binary]>=3.1",
        "torch_optimizer>=0.3",  # Lamb and Lookahead for Catalyst configs (contrib optimizers)
        "optuna>=3.4",  # search sampling (mlcomp.search): ask-and-tell, Random/TPE/Grid samplers
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.2", "playwright>=1.40", "openapi-spec-validator>=0.7",
                 "tensorboard>=2.10", "mlflow-skinny>=2.10",  # so the TensorBoard and MLflow loggers are tested
                 "schemathesis>=4.3", "hypothesis>=6.100"],  # the API against openapi.json; fuzzing
        "tensorboard": ["tensorboard"],
        "mlflow": ["mlflow-skinny>=2.10"],  # the MLflowLogger callback (the tracking client, no server)
        "nvml": ["nvidia-ml-py"],  # GPU detection and usage through NVML (else torch.cuda)
        "albumentations": ["albumentations"],  # transform_params names its transforms (A.Compose...)
        "vision": ["torchvision"],  # downloads of catalyst.contrib.datasets.MNIST (torchvision's mirrors)
        "kaggle": ["kaggle>=1.5"],  # the download and submit task types (MLComp's Kaggle executors)
        "bench": ["luigi>=3",  # peers measured in the same run as mlcomp: bench/dag_overhead.py,
                  "pytorch-ignite>=0.5"],  # bench/runner_overhead.py
    },
    entry_points={"console_scripts": ["mlcomp=mlcomp.cli:main"]},
)
