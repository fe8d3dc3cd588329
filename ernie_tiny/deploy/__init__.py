"""Deployment: export a finetuned model to an inference directory (``export.py``, checked
against eager), int8 quantization (``quantize.py``), the runtimes it runs on (``backends.py``:
Paddle Inference, onnxruntime, OpenVINO, and which one ``auto`` picks) and one predictor over
them (``predictor.py``) that ``deploy/python/infer.py`` and ``deploy/serving/server.py`` use
(``tools/benchmark.py latency`` times the backends themselves). ``finetune.py`` makes the model to export;
``kserve_v2.py`` is the server's KServe v2 / Triton HTTP protocol."""
