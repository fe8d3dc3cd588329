"""Which backend ``auto`` runs (ernie_tiny.deploy.backend_timing, backends.resolve_backend), the
CPU instruction sets recorded beside the timings, and the vocabulary kept by pruning."""
import numpy as np
import pytest

from ernie_tiny.deploy.backend_timing import choose, cpu_features, time_backends
from ernie_tiny.deploy.backends import resolve_backend
from ernie_tiny.deploy.vocab_prune import kept_ids

MS = {"paddle": [9.0, 80.0], "onnx": [5.0, 50.0], "onnx-fused": [4.0, 52.0], "onnx-int8": [2.0, 30.0]}


def test_cpu_features_name_the_instruction_sets_that_pick_kernels(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx avx2 fma avx512f avx512bw "
                       "avx512_vnni amx_tile amx_int8\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    found = cpu_features(str(cpuinfo))
    assert found == {"model": "Some CPU", "vnni": True,
                     "instruction_sets": ["AVX2", "FMA", "AVX-512F", "AVX-512BW", "AVX-512 VNNI", "AMX", "AMX-INT8"]}
    cpuinfo.write_text("flags\t: avx avx2 fma\n")
    assert cpu_features(str(cpuinfo)) == {"model": "", "vnni": False, "instruction_sets": ["AVX2", "FMA"]}
    assert cpu_features(str(tmp_path / "missing"))["instruction_sets"] == []


def test_choose_takes_the_fastest_over_both_shapes_and_int8_only_when_allowed():
    # fused: 4/5 at batch 1, 52/50 at the larger batch -> geometric mean 0.83 of onnx's: fused
    assert choose(MS, allow_int8=False) == "onnx-fused"
    assert choose(MS, allow_int8=True) == "onnx-int8"
    assert choose({"onnx": [5.0, 50.0], "onnx-fused": [4.9, 80.0]}, allow_int8=False) == "onnx"
    assert choose({"paddle": [1.0, 1.0], "onnx-int8": [0.1, 0.1]}, allow_int8=False) == "paddle"
    with pytest.raises(ValueError):
        choose({"onnx-int8": [1.0]}, allow_int8=False)


def test_time_backends_runs_each_on_the_same_inputs_per_shape():
    seen = []
    backends = {name: (lambda ids, types, name=name: seen.append((name, ids.shape, int(ids.sum()))))
                for name in ("a", "b")}
    ms = time_backends(backends, [(1, 8), (3, 8)], vocab_size=50, repeats=2, warmup=1)
    assert set(ms) == {"a", "b"} and all(len(t) == 2 for t in ms.values())
    for shape in ((1, 8), (3, 8)):
        calls = [(n, s) for n, sh, s in seen if sh == shape]
        assert len(calls) == 6 and len({s for _, s in calls}) == 1  # 3 calls each, identical inputs


def test_resolve_backend_takes_the_fastest_recorded_backend_this_export_can_run():
    info = {"onnx": "model.onnx", "onnx_fused": "model.fused.onnx", "onnx_int8": "model.int8.onnx"}
    assert resolve_backend("auto", info) == "onnx"  # exported before timings existed: onnxruntime fp32
    assert resolve_backend("auto", info, device="gpu") == "paddle"
    assert resolve_backend("paddle", info) == "paddle"
    assert resolve_backend("auto", {"onnx": None}) == "paddle"
    timed = {**info, "timing": {"median_ms": MS}}  # auto recomputes from the recorded medians
    assert resolve_backend("auto", timed) == "onnx-fused" and resolve_backend("auto", timed, allow_int8=True) == \
        "onnx-int8"
    assert resolve_backend("auto", {**timed, "onnx_fused": None}) == "onnx"  # fastest of what this export has
    slow_fused = {**timed, "timing": {"median_ms": {**MS, "openvino": [1.0, 1.0]}}}
    assert resolve_backend("auto", slow_fused) == "onnx-fused"  # openvino timed but not checked: not taken
    checked = {**slow_fused, "checks": {"openvino": {"max_abs_diff": 0.0}}}
    assert resolve_backend("auto", checked) == "openvino"


def test_pruning_keeps_specials_frequent_ids_and_every_seen_token():
    assert kept_ids([[7, 3, 7], [12]], special_ids=[0, 1, 2], keep_frequent=0, vocab_size=20) == [0, 1, 2, 3, 7, 12]
    assert kept_ids([[15]], special_ids=[0], keep_frequent=4, vocab_size=20) == [0, 1, 2, 3, 15]
    assert kept_ids([[3]], special_ids=[0], keep_frequent=99, vocab_size=5) == [0, 1, 2, 3, 4]


def test_openvino_int8_runs_only_where_the_int8_gate_scored_it():
    """openvino-int8 is offered when the export wrote OpenVINO's int8 model (static int8) and its
    int8 accuracy gate ran it, and auto takes it only with int8 allowed."""
    ms = {"onnx": [5.0, 50.0], "onnx-int8": [3.0, 30.0], "openvino": [4.0, 40.0], "openvino-int8": [2.0, 20.0]}
    info = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "timing": {"median_ms": ms},
            "checks": {"openvino": {"max_abs_diff": 0.0}}, "int8": {"runtimes": {"onnx-int8": {"score": 80.0}}}}
    assert resolve_backend("auto", info, allow_int8=True) == "onnx-int8"  # dynamic int8: OpenVINO never ran it
    scored = {**info, "openvino_int8": "model.int8.openvino.onnx",
              "int8": {"runtimes": {"onnx-int8": {"score": 80.0}, "openvino-int8": {"score": 80.0}}}}
    assert resolve_backend("auto", {**scored, "openvino_int8": None}, allow_int8=True) == "onnx-int8"  # no file
    assert resolve_backend("auto", scored) == "openvino"
    assert resolve_backend("auto", scored, allow_int8=True) == "openvino-int8"


def test_openvino_bf16_runs_only_where_its_gate_scored_it_and_only_with_reduced_precision_allowed(monkeypatch):
    import ernie_tiny.deploy.backends as backends

    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    ms = {"onnx": [5.0, 50.0], "openvino": [4.0, 40.0], "openvino-bf16": [2.5, 25.0], "openvino-int8": [2.0, 40.0]}
    info = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "openvino_int8": "model.int8.openvino.onnx",
            "timing": {"median_ms": ms}, "checks": {"openvino": {"max_abs_diff": 0.0}},
            "int8": {"runtimes": {"openvino-int8": {"score": 80.0}}}}
    assert resolve_backend("auto", info, allow_int8=True) == "openvino-int8"  # bf16 timed but never scored
    scored = {**info, "bf16": {"runtimes": {"openvino-bf16": {"score": 80.0}}}}
    assert resolve_backend("auto", scored) == "openvino"  # fp32 only: bf16 is reduced precision
    assert resolve_backend("auto", scored, allow_int8=True) == "openvino-bf16"  # fastest over both shapes
    assert choose(ms, allow_int8=False) == "openvino"
    monkeypatch.setattr(backends, "native_bf16", lambda: False)  # served on a CPU without native bf16
    assert resolve_backend("auto", scored, allow_int8=True) == "openvino-int8"  # OpenVINO would compute fp32 there


def test_a_bf16_record_left_out_by_its_gate_reads_as_no_bf16():
    from ernie_tiny.deploy.backends import checked_on_openvino
    from ernie_tiny.deploy.result import ExportResult

    left_out = {"metric": "accuracy", "runtimes": {}, "left_out": "bf16 on openvino-bf16 scores 2.00 points below"}
    assert not checked_on_openvino("openvino-bf16", {"bf16": left_out})
    assert ExportResult(1e-7, None, left_out).headline().endswith(", bf16 left out")
    scored = {"metric": "accuracy", "fp32": 80.0, "runtimes": {"openvino-bf16": {"score": 79.9}}}
    assert "bf16 dev accuracy 79.9 (openvino-bf16) vs fp32 80.0" in ExportResult(1e-7, None, scored).headline()


def test_the_latency_baseline_is_the_export_itself_only_when_it_is_the_model_as_trained(tmp_path):
    from ernie_tiny.benchmarks.latency import baseline_graph

    plain = {"onnx": "model.onnx", "head": "sequence", "first_token_graph": False, "vocab_pruning": None}
    assert baseline_graph(tmp_path, plain, None, tmp_path) == (tmp_path / "model.onnx", "the export's model.onnx", True)
    for changed in ({"first_token_graph": True}, {"vocab_pruning": {"vocab_after": 10}}):
        path, what, whole = baseline_graph(tmp_path, {**plain, **changed}, str(tmp_path / "missing"), tmp_path)
        assert path == tmp_path / "model.onnx" and not whole and "source model was not found" in what


def test_timing_warms_a_backend_past_its_shape_compile():
    from ernie_tiny.benchmarks.turns import measure
    from ernie_tiny.deploy.backend_timing import warmup_calls

    calls = []

    def compiling(ids, types):  # like OpenVINO's backend: compiles a shape on its 5th call
        calls.append(ids.shape)

    compiling.promote_after = 5
    assert warmup_calls(compiling, 1) == 5 and warmup_calls(lambda *a: None, 2) == 2
    time_backends({"ov": compiling}, [(1, 4)], vocab_size=50, repeats=2, warmup=1)
    assert len(calls) == 7  # 5 untimed, 2 timed
    calls.clear()
    measure({"ov": compiling}, (np.zeros((1, 4), np.int64),) * 2, iters=5, warmup=1, max_seconds=0, block=5, pause=0)
    assert len(calls) >= 5 + 5


def test_activation_matmuls_finds_attentions_products_not_weight_matmuls():
    """NNCF leaves these fp32: a MatMul of two activations; not one whose weight is an
    initializer, or reaches it through nodes that read only weights (Transpose of a constant)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from ernie_tiny.deploy.quantize import activation_matmuls

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="dense"),
             helper.make_node("Transpose", ["w"], ["w_t"], name="weight_t"),
             helper.make_node("MatMul", ["x", "w_t"], ["k"], name="dense_t"),
             helper.make_node("Constant", [], ["c"], name="const", value=weight),
             helper.make_node("MatMul", ["x", "c"], ["v"], name="dense_c"),
             helper.make_node("Transpose", ["k"], ["k_t"], name="k_t"),
             helper.make_node("MatMul", ["q", "k_t"], ["scores"], name="q_k"),
             helper.make_node("MatMul", ["scores", "v"], ["y"], name="scores_v")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [weight])
    assert activation_matmuls(helper.make_model(graph)) == ["q_k", "scores_v"]
