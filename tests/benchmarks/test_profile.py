"""The train-step profile: the HLO classifier on a hand-written module, the PyTorch classifier on
hand-written op chains, and one real profile of each framework (BiSeNetV2, batch 2, 64x64, 1 step)."""
from __future__ import annotations

import json
import os
import pathlib
import threading

import jax
import pytest

from bisenet_jax.benchmarks import profile

FWD_NAME = "jit(train_step)/jvp(Net)"
BWD_NAME = "jit(train_step)/transpose(jvp(Net))"

HLO = f"""HloModule jit_train_step, entry_computation_layout={{(f32[2,8,8,4]{{3,2,1,0}})->f32[]}}

%fused_conv_fwd (param_0: f32[2,8,8,4], param_1: f32[3,3,4,16]) -> f32[2,8,8,16] {{
  %param_0 = f32[2,8,8,4]{{3,2,1,0}} parameter(0)
  %param_1 = f32[3,3,4,16]{{3,2,1,0}} parameter(1)
  ROOT %convolution.1 = f32[2,8,8,16]{{3,2,1,0}} convolution(%param_0, %param_1), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_01io->b01f, metadata={{op_name="{FWD_NAME}/block/conv/conv_general_dilated" stack_frame_id=1}}
}}

%fused_conv_dx (param_0.1: f32[2,8,8,16], param_1.1: f32[3,3,16,4]) -> f32[2,8,8,4] {{
  %param_0.1 = f32[2,8,8,16]{{3,2,1,0}} parameter(0)
  %param_1.1 = f32[3,3,16,4]{{3,2,1,0}} parameter(1)
  ROOT %convolution.2 = f32[2,8,8,4]{{3,2,1,0}} convolution(%param_0.1, %param_1.1), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_01io->b01f, metadata={{op_name="{BWD_NAME}/block/conv/conv_general_dilated"}}
}}

%fused_conv_dw (param_0.2: f32[4,8,8,2], param_1.2: f32[8,8,2,16]) -> f32[4,3,3,16] {{
  %param_0.2 = f32[4,8,8,2]{{3,2,1,0}} parameter(0)
  %param_1.2 = f32[8,8,2,16]{{3,2,1,0}} parameter(1)
  ROOT %convolution.3 = f32[4,3,3,16]{{3,2,1,0}} convolution(%param_0.2, %param_1.2), window={{size=8x8 pad=1_1x1_1}}, dim_labels=b01f_01io->b01f
}}

%fused_grouped (param_0.3: f32[2,8,8,16], param_1.3: f32[3,3,1,16]) -> f32[2,8,8,16] {{
  %param_0.3 = f32[2,8,8,16]{{3,2,1,0}} parameter(0)
  %param_1.3 = f32[3,3,1,16]{{3,2,1,0}} parameter(1)
  ROOT %convolution.4 = f32[2,8,8,16]{{3,2,1,0}} convolution(%param_0.3, %param_1.3), window={{size=3x3 pad=1_1x1_1}}, dim_labels=b01f_01io->b01f, feature_group_count=16, metadata={{op_name="{FWD_NAME}/block/dw/conv_general_dilated"}}
}}

%fused_bn_relu (param_0.4: f32[2,8,8,16], param_1.4: f32[16]) -> f32[2,8,8,16] {{
  %param_0.4 = f32[2,8,8,16]{{3,2,1,0}} parameter(0)
  %param_1.4 = f32[16]{{0}} parameter(1)
  %broadcast.1 = f32[2,8,8,16]{{3,2,1,0}} broadcast(%param_1.4), dimensions={{3}}
  %multiply.1 = f32[2,8,8,16]{{3,2,1,0}} multiply(%param_0.4, %broadcast.1), metadata={{op_name="{FWD_NAME}/block/bn/mul"}}
  %constant.1 = f32[] constant(0)
  %broadcast.2 = f32[2,8,8,16]{{3,2,1,0}} broadcast(%constant.1), dimensions={{}}
  ROOT %maximum.1 = f32[2,8,8,16]{{3,2,1,0}} maximum(%multiply.1, %broadcast.2), metadata={{op_name="{FWD_NAME}/block/jit(relu)/max"}}
}}

%fused_relu_transpose (param_0.5: f32[2,8,8,16]) -> f32[16,8,8,2] {{
  %param_0.5 = f32[2,8,8,16]{{3,2,1,0}} parameter(0)
  %constant.2 = f32[] constant(0)
  %broadcast.3 = f32[2,8,8,16]{{3,2,1,0}} broadcast(%constant.2), dimensions={{}}
  %maximum.2 = f32[2,8,8,16]{{3,2,1,0}} maximum(%param_0.5, %broadcast.3), metadata={{op_name="{FWD_NAME}/block/jit(relu)/max"}}
  ROOT %transpose.1 = f32[16,8,8,2]{{3,2,1,0}} transpose(%maximum.2), dimensions={{3,1,2,0}}, metadata={{op_name="{FWD_NAME}/block/jit(relu)/max"}}
}}

%fused_dw_dx (param_0.6: f32[2,10,10,16], param_1.6: f32[16]) -> f32[2,8,8,16] {{
  %param_0.6 = f32[2,10,10,16]{{3,2,1,0}} parameter(0)
  %param_1.6 = f32[16]{{0}} parameter(1)
  %slice.1 = f32[2,8,8,16]{{3,2,1,0}} slice(%param_0.6), slice={{[0:2], [1:9], [1:9], [0:16]}}, metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/slice"}}
  %broadcast.4 = f32[2,8,8,16]{{3,2,1,0}} broadcast(%param_1.6), dimensions={{3}}
  ROOT %multiply.2 = f32[2,8,8,16]{{3,2,1,0}} multiply(%slice.1, %broadcast.4), metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/mul"}}
}}

%fused_flip (param_0.8: f32[3,3,4,16]) -> f32[3,3,16,4] {{
  %param_0.8 = f32[3,3,4,16]{{3,2,1,0}} parameter(0)
  %reverse.1 = f32[3,3,4,16]{{3,2,1,0}} reverse(%param_0.8), dimensions={{0,1}}
  ROOT %copy.8 = f32[3,3,16,4]{{3,2,1,0}} transpose(%reverse.1), dimensions={{0,1,3,2}}
}}

%add (x: f32[], y: f32[]) -> f32[] {{
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%x, %y)
}}

%fused_dw_dw (param_0.7: f32[2,8,8,16], param_1.7: f32[2,8,8,16]) -> f32[16] {{
  %param_0.7 = f32[2,8,8,16]{{3,2,1,0}} parameter(0)
  %param_1.7 = f32[2,8,8,16]{{3,2,1,0}} parameter(1)
  %multiply.3 = f32[2,8,8,16]{{3,2,1,0}} multiply(%param_0.7, %param_1.7), metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/mul"}}
  %constant.3 = f32[] constant(0)
  ROOT %reduce.1 = f32[16]{{0}} reduce(%multiply.3, %constant.3), dimensions={{0,1,2}}, to_apply=%add, metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/reduce_sum"}}
}}

ENTRY %main.9 (Arg_0: f32[2,8,8,4]) -> f32[] {{
  %Arg_0 = f32[2,8,8,4]{{3,2,1,0}} parameter(0), metadata={{op_name="batch[\\'image\\']"}}
  %ynn_fusion.1 = f32[2,8,8,16]{{3,2,1,0}} fusion(%Arg_0, %k), kind=kCustom, calls=%fused_conv_fwd, backend_config={{"fusion_config":{{"kind":"__ynn_fusion"}}}}
  %ynn_fusion.2 = f32[2,8,8,4]{{3,2,1,0}} fusion(%g, %k), kind=kCustom, calls=%fused_conv_dx, metadata={{op_name="{BWD_NAME}/block/conv/conv_general_dilated"}}
  %ynn_fusion.3 = f32[4,3,3,16]{{3,2,1,0}} fusion(%a, %g), kind=kCustom, calls=%fused_conv_dw, metadata={{op_name="jit(train_step)/reduce_sum"}}
  %ynn_fusion.4 = f32[2,8,8,16]{{3,2,1,0}} fusion(%x, %w), kind=kCustom, calls=%fused_grouped
  %multiply_maximum_fusion = f32[2,8,8,16]{{3,2,1,0}} fusion(%y, %s), kind=kLoop, calls=%fused_bn_relu, metadata={{op_name="{FWD_NAME}/block/jit(relu)/max"}}
  %transpose_copy_fusion = f32[16,8,8,2]{{3,2,1,0}} fusion(%y), kind=kLoop, calls=%fused_relu_transpose, metadata={{op_name="{FWD_NAME}/block/jit(relu)/max"}}
  %slice_multiply_fusion = f32[2,8,8,16]{{3,2,1,0}} fusion(%p, %w1), kind=kLoop, calls=%fused_dw_dx, metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/mul"}}
  %multiply_reduce_fusion = f32[16]{{0}} fusion(%x, %g), kind=kLoop, calls=%fused_dw_dw, metadata={{op_name="{BWD_NAME}/block/dw/kernel_depthwise_conv/reduce_sum"}}
  %slice_maximum_fusion = f32[2,4,4,16]{{3,2,1,0}} fusion(%y), kind=kLoop, calls=%fused_bn_relu, metadata={{op_name="{FWD_NAME}/stem/kernel_max_pool/max"}}
  %resize_fusion = f32[2,16,16,16]{{3,2,1,0}} fusion(%y), kind=kLoop, calls=%fused_bn_relu, metadata={{op_name="{BWD_NAME}/head/jit(_resize)/mul"}}
  %reduce_max_fusion = f32[2,8,8]{{2,1,0}} fusion(%l), kind=kLoop, calls=%add, metadata={{op_name="jit(train_step)/jvp()/reduce_max"}}
  %negate_fusion = f32[2,8,8,19]{{3,2,1,0}} fusion(%l), kind=kLoop, calls=%add, metadata={{op_name="jit(train_step)/transpose(jvp())/neg"}}
  %while.3 = (s32[], f32[16]{{0}}, /*index=2*/s32[]) while(%tuple.1), condition=%cond, body=%body, metadata={{op_name="jit(train_step)/jvp()/cond/branch_0_fun/while"}}
  %add_select_fusion = f32[3,3,4,16]{{3,2,1,0}} fusion(%k, %dk), kind=kLoop, calls=%add, metadata={{op_name="jit(train_step)/jit(_where)/select_n"}}
  %threefry_fusion = u32[2]{{0}} fusion(%r), kind=kLoop, calls=%add, metadata={{op_name="jit(train_step)/jit(_threefry_fold_in)/threefry2x32"}}
  %copy.7 = f32[3,3,4,16]{{3,2,1,0}} copy(%k)
  %dot.5 = f32[4,64]{{1,0}} dot(%x, %g), lhs_contracting_dims={{0,1,2}}, rhs_contracting_dims={{0,1,2}}, metadata={{op_name="{BWD_NAME}/head/up/conv/kernel_upsample_conv/dot_general"}}
  %copy.9 = f32[2,16,16,16]{{3,2,1,0}} copy(%z), metadata={{op_name="{FWD_NAME}/head/up/conv/kernel_upsample_conv/reshape"}}
  %copy_reverse_fusion = f32[3,3,16,4]{{3,2,1,0}} fusion(%k), kind=kLoop, calls=%fused_flip
  ROOT %add_fusion = f32[] fusion(%c), kind=kLoop, calls=%add, metadata={{op_name="{FWD_NAME}/block/add"}}
}}
"""

EXPECTED = {
    "ynn_fusion.1": "conv dense/forward",  # no op_name on the fusion: the convolution's
    "ynn_fusion.2": "conv dense/input grad",
    "ynn_fusion.3": "conv dense/kernel grad",  # IHWO output, no op_name on the conv, a misleading one on the fusion
    "ynn_fusion.4": "conv depthwise/forward",  # feature_group_count
    "multiply_maximum_fusion": "batchnorm/forward",  # BN apply + ReLU: the fused BN op decides
    "transpose_copy_fusion": "layout copy/forward",
    "slice_multiply_fusion": "conv depthwise/input grad",  # the labelled CPU form, batch-shaped output
    "multiply_reduce_fusion": "conv depthwise/kernel grad",  # ... reduced to the kernel
    "slice_maximum_fusion": "max pool/forward",
    "resize_fusion": "resize/backward",
    "reduce_max_fusion": "loss+OHEM/forward",
    "negate_fusion": "loss+OHEM/backward",
    "while.3": "loss+OHEM/forward",
    "add_select_fusion": "optimizer/update",
    "threefry_fusion": "other/update",
    "copy.7": "layout copy/unattributed",
    "dot.5": "conv dense/kernel grad",  # the upsampling convolution's CPU form: its kernel gradient, a matmul per tap
    "copy.9": "layout copy/forward",  # ... and the interleaving of its four output phases
    "copy_reverse_fusion": "layout copy/backward",  # no op_name, but a kernel flip is backward work
    "add_fusion": "other/forward",
}
INFO = profile.ModelInfo("Net", 2, frozenset({profile._squeezed((3, 3, 4, 16)), profile._squeezed((3, 3, 1, 16))}),
                         frozenset({"block/bn"}))


def test_parse_hlo_reads_names_shapes_opcodes_metadata_and_fused_computations():
    instructions, computations = profile.parse_hlo(HLO)
    assert set(EXPECTED) <= set(instructions)
    assert instructions["while.3"].opcode == "while"
    assert instructions["while.3"].shape == "(s32[], f32[16]{0}, /*index=2*/s32[])"
    assert profile.array_dims(instructions["while.3"].shape) == [(), (16,), ()]
    assert instructions["ynn_fusion.3"].calls == ("fused_conv_dw",)
    assert instructions["convolution.3"].op_name == ""
    assert instructions["Arg_0"].op_name == "batch[\\'image\\']"
    assert [i.name for i in computations["fused_conv_fwd"]] == ["param_0", "param_1", "convolution.1"]
    assert profile.representative_op_name(instructions["ynn_fusion.1"], computations).endswith(
        "jvp(Net)/block/conv/conv_general_dilated")


def test_classify_hand_written_hlo():
    instructions, computations = profile.parse_hlo(HLO)
    got = {name: profile.classify(instructions[name], computations, INFO) for name in EXPECTED}
    assert got == EXPECTED
    assert set(got.values()) <= set(profile.CATEGORIES)


def test_kernel_gradient_is_recognised_by_the_model_kernel_shapes():
    instructions, computations = profile.parse_hlo(HLO)
    no_kernels = profile.ModelInfo("Net", 2, frozenset(), frozenset())
    # Without the (3, 3, 4, 16) kernel the IHWO-shaped convolution has no kernel to be the gradient of.
    assert profile.classify(instructions["ynn_fusion.3"], computations, no_kernels) == "conv dense/input grad"


FORWARD_HLO = HLO.replace(FWD_NAME, "jit(forward)/Net").replace("jit(train_step)/reduce_sum", "jit(forward)/Net/h/x")


def test_classify_a_forward_only_program():
    """Inference: op_names carry "<model>/" without jvp; every op is forward work, none is a loss,
    an optimizer update or a kernel gradient (a convolution whose output has a kernel's shape)."""
    instructions, computations = profile.parse_hlo(FORWARD_HLO)
    info = profile.ModelInfo("Net", 2, INFO.kernel_shapes, INFO.batchnorm_paths, forward_only=True)
    got = {name: profile.classify(instructions[name], computations, info)
           for name in ("ynn_fusion.1", "ynn_fusion.3", "ynn_fusion.4", "multiply_maximum_fusion",
                        "transpose_copy_fusion", "slice_maximum_fusion", "add_fusion", "copy.9",
                        "copy_reverse_fusion", "reduce_max_fusion")}
    assert got == {"ynn_fusion.1": "conv dense/forward", "ynn_fusion.3": "conv dense/forward",
                   "ynn_fusion.4": "conv depthwise/forward", "multiply_maximum_fusion": "batchnorm/forward",
                   "transpose_copy_fusion": "layout copy/forward", "slice_maximum_fusion": "max pool/forward",
                   "add_fusion": "other/forward", "copy.9": "layout copy/forward",
                   "copy_reverse_fusion": "layout copy/unattributed",  # a flip is no backward sign here
                   "reduce_max_fusion": "other/forward"}  # outside the model: no loss in a forward
    # The same instruction read as a train step's: the IHWO-shaped convolution is a kernel gradient.
    assert profile.classify(instructions["ynn_fusion.3"], computations, INFO) == "conv dense/kernel grad"


def test_inference_profiles_of_bisenetv2(tmp_path):
    """One traced forward of each framework: all time is forward work, the dense and depthwise
    convolutions, BatchNorm and the resize are found, every JAX event is an instruction. A busy Python
    thread beside it (as pytest-xdist's execnet one can be) leaves no Python events in the trace."""
    stop = threading.Event()

    def spin():  # Python work for the tracer to see, if it were on
        while not stop.is_set():
            sum(range(100))

    busy_python = threading.Thread(target=spin, daemon=True)
    busy_python.start()
    try:
        result = profile.profile_jax_inference("bisenetv2", 1, 64, 64, steps=1, warmup=1, top=5, trace_dir=str(tmp_path))
    finally:
        stop.set()
        busy_python.join()
    categories = result["categories"]
    assert result["unmatched"] == []
    (xspace,) = tmp_path.rglob("*.xplane.pb")
    assert not [e.name for plane in jax.profiler.ProfileData.from_file(str(xspace)).planes for line in plane.lines
                for e in line.events if e.name.startswith("$")]
    total_ns, events = _thread_time_ns(tmp_path)
    assert result["op_sum_ms"] == pytest.approx(total_ns / 1e6, rel=1e-6)
    assert sum(c["ops"] for c in categories.values()) == events
    for name in ("conv dense/forward", "conv depthwise/forward", "batchnorm/forward", "resize/forward"):
        assert categories[name]["ms"] > 0 and categories[name]["ops"] > 0, name
    busy = {name for name, c in categories.items() if c["ops"]}
    assert all(name.endswith(("/forward", "/unattributed")) for name in busy), busy
    assert not any(name.startswith(("loss+OHEM", "optimizer")) for name in busy), busy
    assert json.loads(json.dumps(result)) == result
    pytest.importorskip("torch")
    torch_side = profile.profile_torch_inference("bisenetv2", 1, 64, 64, steps=1, warmup=1, top=5)
    busy = {name for name, c in torch_side["categories"].items() if c["ops"]}
    assert {"conv dense/forward", "conv depthwise/forward", "batchnorm/forward", "resize/forward"} <= busy
    assert all(name.endswith("/forward") for name in busy), busy  # every op ran inside the forward label
    assert torch_side["op_sum_ms"] <= torch_side["traced_wall_ms"] * 1.01


L = profile.LABEL


@pytest.mark.parametrize("chain, expected", [
    ([("aten::mkldnn_convolution", [[2, 16, 8, 8], [16, 1, 3, 3], []]), ("aten::conv2d", []), (L + "forward", [])],
     "conv depthwise/forward"),
    ([("aten::mkldnn_convolution", [[2, 4, 8, 8], [16, 4, 3, 3], []]), (L + "forward", [])], "conv dense/forward"),
    ([("aten::mkldnn_convolution", [[2, 1, 8, 8], [16, 1, 3, 3], []]), (L + "forward", [])], "conv dense/forward"),
    ([("aten::convolution_backward", [[2, 16, 8, 8], [2, 16, 8, 8], [16, 1, 3, 3]]),
      ("autograd::engine::evaluate_function: ConvolutionBackward0", []), (L + "model_backward", [])],
     "conv depthwise/backward"),
    ([("aten::empty", []), ("aten::convolution_backward", [[2, 16, 8, 8], [2, 4, 8, 8], [16, 4, 3, 3]]),
      (L + "model_backward", [])], "conv dense/backward"),
    ([("aten::empty", []), ("aten::native_batch_norm", [[2, 16, 8, 8]]), (L + "forward", [])], "batchnorm/forward"),
    ([("aten::upsample_bilinear2d_backward", []), (L + "model_backward", [])], "resize/backward"),
    ([("aten::max_pool2d_with_indices", []), (L + "forward", [])], "max pool/forward"),
    ([("aten::topk", []), (L + "loss", [])], "loss+OHEM/forward"),
    ([("aten::_log_softmax_backward_data", []), (L + "loss_backward", [])], "loss+OHEM/backward"),
    ([("aten::add_", []), ("Optimizer.step#SGD.step", []), (L + "optimizer", [])], "optimizer/update"),
    ([("aten::copy_", []), (L + "forward", [])], "layout copy/forward"),
    ([("aten::relu_", []), (L + "forward", [])], "other/forward"),
    ([("aten::add_", [])], "other/unattributed"),
])
def test_torch_category(chain, expected):
    assert profile.torch_category(chain) == expected


def _merged(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _thread_time_ns(trace_dir: pathlib.Path) -> tuple[float, int]:
    """Independently of profile.thunk_times: the time the threads of the trace's '/host:CPU' lines spent
    in thread-pool tasks or op events, less their waits, and the number of op events. Python functions
    ('$...' events, of any Python thread such as pytest-xdist's execnet one) are not XLA's work."""
    (xspace,) = trace_dir.rglob("*.xplane.pb")
    total, count = 0.0, 0
    for plane in jax.profiler.ProfileData.from_file(str(xspace)).planes:
        for line in plane.lines if plane.name == "/host:CPU" else ():
            if line.name == "python":
                continue
            working, waits, opened = [], [], []
            for event in sorted(line.events, key=lambda e: e.start_ns):
                if event.name == "ThreadpoolListener::StartRegion":
                    opened.append(event.start_ns)
                elif event.name == "ThreadpoolListener::StopRegion" and opened:
                    working.append((opened.pop(), event.start_ns))
                elif "wait" in event.name.lower():
                    waits.append((event.start_ns, event.end_ns))
                elif not event.name.startswith(("ThreadpoolListener", "ThunkExecutor", "Slinky", "end: ", "$")):
                    working.append((event.start_ns, event.end_ns))
                    count += 1
            working, waits = _merged(working), _merged(waits)
            total += sum(end - start for start, end in working)
            total -= sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in working for s2, e2 in waits)
    return total, count


def test_jax_profile_of_bisenetv2(tmp_path):
    """One traced step: every op event is in exactly one category, the convolutions' forward and both
    gradients are found (dense, and V2's depthwise in the labelled CPU form), the result is plain JSON.
    One test function, so that pytest-xdist workers do not each compile the step."""
    result = profile.profile_jax("bisenetv2", 2, 64, 64, steps=1, warmup=1, top=10, trace_dir=str(tmp_path))
    categories = result["categories"]
    assert set(categories) == set(profile.CATEGORIES)
    assert result["unmatched"] == []  # every event is an instruction of the compiled HLO
    total_ns, events = _thread_time_ns(tmp_path)
    assert sum(c["ms"] for c in categories.values()) == pytest.approx(result["op_sum_ms"], rel=1e-9)
    assert result["op_sum_ms"] == pytest.approx(total_ns / 1e6, rel=1e-6)  # 1 step: nothing dropped or doubled
    assert sum(c["ops"] for c in categories.values()) == events
    assert sum(c["percent"] for c in categories.values()) == pytest.approx(100)
    assert sum(c["wall_ms"] for c in categories.values()) == pytest.approx(result["wall_ms"])
    # Thread time: at most the threads' (two XLA pool threads and the client's) time in the profiled step.
    assert result["op_sum_ms"] <= 3 * result["traced_wall_ms"]
    for group in ("conv dense", "conv depthwise"):
        for phase in ("forward", "input grad", "kernel grad"):
            category = categories[f"{group}/{phase}"]
            assert category["ms"] > 0 and category["ops"] > 0, (group, phase)
        assert categories[f"{group}/backward"]["ops"] == 0  # JAX always tells the two gradients apart
    for name in ("batchnorm/forward", "batchnorm/backward", "loss+OHEM/forward", "loss+OHEM/backward",
                 "optimizer/update", "max pool/forward", "max pool/backward", "resize/forward", "resize/backward"):
        assert categories[name]["ops"] > 0, name
    top = result["top_ops"]
    assert len(top) == 10 and [op["ms"] for op in top] == sorted((op["ms"] for op in top), reverse=True)
    assert all(op["category"] in profile.CATEGORIES and op["op_name"] != "?" for op in top)
    assert json.loads(json.dumps(result)) == result


def test_torch_profile_of_bisenetv2():
    pytest.importorskip("torch")
    result = profile.profile_torch("bisenetv2", 2, 64, 64, steps=1, warmup=1, top=10)
    categories = result["categories"]
    assert categories["other/unattributed"]["ops"] == 0  # every op ran inside one of the phase labels
    assert sum(c["ms"] for c in categories.values()) == pytest.approx(result["op_sum_ms"], rel=1e-9)
    for name in ("conv dense/forward", "conv dense/backward", "conv depthwise/forward", "conv depthwise/backward",
                 "batchnorm/forward", "batchnorm/backward", "loss+OHEM/forward", "loss+OHEM/backward",
                 "optimizer/update", "resize/forward", "resize/backward", "max pool/forward"):
        assert categories[name]["ms"] > 0, name
    assert categories["conv dense/input grad"]["ops"] == categories["conv dense/kernel grad"]["ops"] == 0
    # One op at a time: the self times add up to no more than the profiled wall time.
    assert result["op_sum_ms"] <= result["traced_wall_ms"] * 1.01
    assert json.loads(json.dumps(result)) == result


def _fake_side(ms_by_category: dict[str, float]) -> dict:
    times = {f"op{i}": [ms * 1e6, 1] for i, ms in enumerate(ms_by_category.values())}
    details = {f"op{i}": {"name": f"op{i}", "category": c, "opcode": "fusion", "shape": "f32[2]{0}", "op_name": ""}
               for i, c in enumerate(ms_by_category)}
    return profile._summary(times, details, 1, [0.02], [0.025], 5)


def test_cli_prints_both_sides_and_writes_json_that_round_trips(monkeypatch, tmp_path, capsys, load_script):
    jax_side = _fake_side({"conv dense/kernel grad": 12.5, "optimizer/update": 7.5})
    torch_side = _fake_side({"conv dense/backward": 30.0, "loss+OHEM/forward": 10.0})
    assert jax_side["op_sum_ms"] == pytest.approx(20.0) and jax_side["wall_ms"] == pytest.approx(20.0)
    assert jax_side["categories"]["optimizer/update"]["percent"] == pytest.approx(37.5)
    assert jax_side["categories"]["optimizer/update"]["wall_ms"] == pytest.approx(7.5)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the script adds the defaults: undone after
    script = load_script("profile_train")
    monkeypatch.setattr(profile, "profile_jax", lambda *args, **kwargs: jax_side)
    monkeypatch.setattr(profile, "profile_torch", lambda *args, **kwargs: torch_side)
    path = tmp_path / "profile.json"
    assert script.main(["--model", "bisenetv2", "--batch-size", "2", "--crop", "64x64", "--steps", "1", "--torch",
                        "--top", "5", "--json", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("XLA_FLAGS") for line in lines) and any("thread time" in line for line in lines)

    def row(label):
        return next(line for line in lines if line.startswith(label)).split()[len(label.split()):]

    # ms, % of the side's sum, that share of the side's wall time (20 ms each here)
    assert row("conv dense / kernel grad") == ["12.5", "62.5", "12.5", "-"]
    assert row("conv dense / backward") == ["-", "30.0", "75.0", "15.0"]
    assert row("conv dense / total") == ["12.5", "62.5", "12.5", "30.0", "75.0", "15.0"]
    assert row("loss+OHEM / forward") == ["-", "10.0", "25.0", "5.0"]
    assert row("all backward") == ["12.5", "62.5", "12.5", "30.0", "75.0", "15.0"]
    assert row("sum of op times") == ["20.0", "40.0"]
    assert row("wall per step, unprofiled") == ["20.0", "20.0"]
    assert not any(line.startswith("batchnorm") for line in lines)  # categories no side has are left out
    report = json.loads(path.read_text())
    assert report["jax"] == jax_side and report["torch"] == torch_side
    assert (report["model"], report["crop"], report["batch_size"], report["steps"]) == ("bisenetv2", "64x64", 2, 1)
    assert report["mode"] == "train step"


def test_cli_inference_mode_profiles_the_forward(monkeypatch, tmp_path, capsys, load_script):
    calls = []
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    script = load_script("profile_train")
    side = _fake_side({"conv dense/forward": 8.0, "resize/forward": 2.0})
    for name in ("profile_jax", "profile_torch", "profile_jax_inference", "profile_torch_inference"):
        monkeypatch.setattr(profile, name, lambda *args, _name=name, **kwargs: calls.append((_name, args)) or side)
    path = tmp_path / "profile.json"
    assert script.main(["--inference", "--model", "bisenetv1_x39", "--batch-size", "1", "--crop", "64x128",
                        "--torch", "--json", str(path)]) == 0
    assert calls == [("profile_jax_inference", ("bisenetv1_x39", 1, 64, 128)),
                     ("profile_torch_inference", ("bisenetv1_x39", 1, 64, 128))]
    out = capsys.readouterr().out
    assert out.startswith("inference profile: bisenetv1_x39, batch 1, crop 64x128, 2 profiled calls")
    assert "all forward" in out and "all backward" not in out and "all update" not in out
    assert json.loads(path.read_text())["mode"] == "inference"
