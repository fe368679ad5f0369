"""Packaging for bisenet-rt. Imports nothing heavy: versions are pinned here, not probed."""
from setuptools import find_packages, setup

setup(
    name="bisenet-rt",
    version="0.1.0",
    description="Real-time BiSeNetV2 semantic segmentation: PyTorch reference, ONNX export, TensorRT / "
                "ONNX Runtime / OpenVINO runtime, benchmark and evaluation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bisenet_rt", "bisenet_rt.*"]),
    package_data={"bisenet_rt": ["assets/*"]},
    install_requires=[
        "numpy>=1.24",
        "torch==2.13.0",
        "onnx>=1.16",
        "onnxruntime>=1.20",
        "openvino>=2026.4",
        "opencv-python-headless>=4.8",
        "tqdm>=4.60",
        "psutil>=5.9",
    ],
    extras_require={
        # cuda.bindings appeared in cuda-python 12.6.1. onnxruntime-gpu is not here: it overwrites the files
        # of the onnxruntime this package needs; swap them by hand (README, "GPU").
        "gpu": ["tensorrt>=10.0", "cuda-python>=12.6.1"],
        "triton": ["tritonclient[grpc]>=2.50"],
        "bench": ["matplotlib>=3.7"],
        "dev": ["pytest>=8.0", "tritonclient[grpc]>=2.50"],
    },
    entry_points={"console_scripts": ["bisenet-rt=bisenet_rt.cli:main"]},
)
