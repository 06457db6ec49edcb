"""Per-layer int8 sensitivity of one exported subnet, for the TensorRT or the ONNX Runtime flavour.

Input: an fp32 export directory (``ofa-deploy export RUN --precision fp32 --target jetson-orin``:
``model.onnx`` plus ``calibration.npy``, the 512 training images ``export --precision int8`` would
calibrate on) and the run it came from (for the data). The script quantizes ``model.onnx`` with the
project's own ``ofa_deploy.export.precision.to_int8`` and measures, on an evaluation split:

* fp32 and the full int8 model (ONNX Runtime with all graph optimizations, i.e. its integer kernels,
  and with none, i.e. the plain Q/DQ arithmetic that TensorRT's int8 kernels reproduce);
* the int8 model with the Q/DQ in front of ONE node removed (that node's quantized inputs rewired to
  their float values: activation -> the QuantizeLinear's input, weight -> the float initializer), for
  every node that has quantized inputs; and the same for whole groups of nodes (stem, SE, h-swish, ...);
* calibration variants: method (minmax / percentile / entropy) and number of calibration images;
* placement variants (``--placement``), when ``to_int8`` offers them.

Evaluation split: the run's validation split if it has one, else a seeded half of the test split
(stated in the output). Metrics: top-1, top-1 agreement with fp32, mean |logit - fp32 logit|.
Prints one JSON document. Deterministic for a given seed (ONNX Runtime on one thread).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tomllib
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's ofa_deploy, not an installed one
from ofa_deploy.evaluate.bn import calibration_images
from ofa_deploy.export import precision as prec
from ofa_deploy.export.images import export_images


def session(model: onnx.ModelProto | str, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def logits(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 128]})[0] for i in range(0, len(x), 128)])


def score(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict:
    return {"top1": round(float((out.argmax(1) == labels).mean()) * 100, 2),
            "agree": round(float((out.argmax(1) == ref.argmax(1)).mean()) * 100, 2),
            "mad": round(float(np.abs(out.astype(np.float64) - ref).mean()), 4)}


OUTPUT_UNIT = "graph output (logits)"  # a Q/DQ pair on the network's output, when the quantizer put one there


def node_label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}->{node.output[0]}"


def group_of(node: onnx.NodeProto, producers: dict) -> str:
    """A coarse role for a node of this MobileNetV3 graph (names come from torch's exporter)."""
    name = node.name
    if node.op_type in ("HardSigmoid", "Mul") and not name:  # ORT's pre-processing splits HardSwish
        return "hswish (HardSigmoid/Mul)"
    if "/se/" in name:
        return "se-gate (HardSigmoid/Mul)" if node.op_type in ("HardSigmoid", "Mul") else f"se {node.op_type}"
    if "stem" in name:
        return "stem conv"
    if "classifier" in name:
        return "classifier Gemm"
    if "/head/" in name:
        return f"head {node.op_type}"
    if node.op_type == "Conv":
        return f"{name.rsplit('/', 2)[-2]} conv"  # expand / dw / project
    return node.op_type


def dequantize_inputs(model: onnx.ModelProto, names: set, floats: dict) -> onnx.ModelProto:
    """A copy of ``model`` where the nodes labelled ``names`` read float inputs instead of DQ outputs."""
    out = copy.deepcopy(model)
    producers = {o: n for n in out.graph.node for o in n.output}
    extra = []
    for node in out.graph.node:
        if node_label(node) not in names:
            continue
        for i, tensor in enumerate(node.input):
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]  # activation: the float tensor before quantization
            else:  # a weight stored as int8: its float original from the fp32 model
                original = dq.input[0].removesuffix("_quantized")
                if original not in floats:
                    raise KeyError(f"no float initializer for {dq.input[0]}")
                new = f"{original}__float"
                if new not in {t.name for t in extra}:
                    extra.append(onnx.numpy_helper.from_array(floats[original], new))
                node.input[i] = new
    out.graph.initializer.extend(extra)
    if OUTPUT_UNIT in names:
        for output in out.graph.output:
            dq = producers.get(output.name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                out.graph.node.remove(dq)
                out.graph.node.append(onnx.helper.make_node("Identity", [q.input[0]], [output.name]))
    return out


def output_quantized(model: onnx.ModelProto) -> bool:
    producers = {o: n for n in model.graph.node for o in n.output}
    return any(producers.get(o.name) is not None and producers[o.name].op_type == "DequantizeLinear"
               for o in model.graph.output)


def quantized_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    producers = {o: n for n in model.graph.node for o in n.output}
    return [n for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)]


def quantize(src: Path, calib: np.ndarray, flavour: str, method: str, placement: str | None) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="int8-sens-") as work:
        dst = Path(work) / "int8.onnx"
        kwargs = {"method": method, "for_tensorrt": flavour == "trt"}
        if placement is not None:
            kwargs["placement"] = placement
        info = prec.to_int8(src, dst, calib, **kwargs)
        return onnx.load(str(dst)), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path, help="an fp32 export with model.onnx and calibration.npy")
    parser.add_argument("--run", type=Path, required=True, help="the run the export came from (for its data)")
    parser.add_argument("--flavour", choices=("trt", "ort"), required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation half and calibration draws")
    parser.add_argument("--per-node", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--calibration-variants", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--placement", default=None,
                        help="to_int8's placement argument for the main model (when it has one)")
    parser.add_argument("--compare-placements", default="",
                        help="comma-separated placements to measure beside the main one")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    config = tomllib.loads((args.run / "config.toml").read_text())
    data = export_images(config, seed=args.seed, train_images=10**7, parity_images=1, accuracy=True)
    if int(config.get("data", {}).get("val_size", 0) or 0) > 0:
        raise SystemExit("this run has a validation split; loading it is not implemented here")
    x_test, y_test = data.eval[0].numpy().astype(np.float32), data.eval[1].numpy()
    order = np.random.default_rng(args.seed).permutation(len(x_test))
    half = np.sort(order[: len(order) // 2])
    x, y = np.ascontiguousarray(x_test[half]), y_test[half]
    split = (f"seeded half of the test split ({len(half)} of {len(x_test)} images, numpy seed {args.seed}): "
             "the run has no validation split")

    fp32_path = args.export_dir / "model.onnx"
    calib_default = np.load(args.export_dir / "calibration.npy")
    train = data.train  # normalised training images, all of them
    fp32_model = onnx.load(str(fp32_path))
    with tempfile.TemporaryDirectory(prefix="int8-sens-") as work:  # float weights as the quantizer saw them
        from onnxruntime.quantization.shape_inference import quant_pre_process
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        floats = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(prepared)).graph.initializer}

    ref = logits(session(fp32_model), x).astype(np.float64)
    import ofa_deploy
    result: dict = {"ofa_deploy": str(Path(ofa_deploy.__file__).parent),
        "export": str(args.export_dir), "run": str(args.run), "flavour": args.flavour, "seed": args.seed,
        "subnet": next((p.value for p in fp32_model.metadata_props if p.key == "ofa_deploy.subnet"), None),
        "split": split, "fp32": score(ref, ref, y),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
                   f"onnxruntime {ort.__version__}, onnx {onnx.__version__}",
        "metrics": "top1 and agree (top-1 agreement with fp32) in %, mad = mean |logit - fp32 logit|",
    }

    main_model, info = quantize(fp32_path, calib_default, args.flavour, "percentile", args.placement)
    result["int8"] = {"conversion": info,
                      "ort_optimized": score(logits(session(main_model), x), ref, y),
                      "qdq_reference": score(logits(session(main_model, optimize=False), x), ref, y)}
    print(f"int8: {result['int8']['ort_optimized']}", file=sys.stderr)

    if args.compare_placements and "placement" in inspect.signature(prec.to_int8).parameters:
        result["placements"] = {}
        for placement in args.compare_placements.split(","):
            model, info = quantize(fp32_path, calib_default, args.flavour, "percentile", placement)
            result["placements"][placement] = {
                "quantize_nodes": info["quantize_nodes"], "dequantize_nodes": info["dequantize_nodes"],
                "ort_optimized": score(logits(session(model), x), ref, y),
                "qdq_reference": score(logits(session(model, optimize=False), x), ref, y)}
            print(f"placement {placement}: {result['placements'][placement]}", file=sys.stderr)

    folded = (sum(n.op_type == "Relu" for n in fp32_model.graph.node)
              - sum(n.op_type == "Relu" for n in main_model.graph.node))
    if folded > 0:  # asymmetric uint8 activations: the quantizer dropped ReLUs whose Q (zero point at 0) clamps
        result["warning"] = (f"{folded} ReLU nodes were folded into QuantizeLinear by the quantizer; removing the "
                             "Q/DQ in front of a node that read such a ReLU also removes the ReLU, so those rows "
                             "(and 'only_one_group_quantized') measure a different network, not quantization error")
    if args.per_node:
        nodes = quantized_nodes(main_model)
        producers = {o: n for n in main_model.graph.node for o in n.output}
        groups: dict[str, list[str]] = {}
        rows = []
        for node in nodes:
            label, group = node_label(node), group_of(node, producers)
            groups.setdefault(group, []).append(label)
            got = logits(session(dequantize_inputs(main_model, {label}, floats)), x)
            rows.append({"node": label, "op": node.op_type, "group": group, **score(got, ref, y)})
        if output_quantized(main_model):
            groups[OUTPUT_UNIT] = [OUTPUT_UNIT]
            got = logits(session(dequantize_inputs(main_model, {OUTPUT_UNIT}, floats)), x)
            rows.append({"node": OUTPUT_UNIT, "op": "QuantizeLinear", "group": OUTPUT_UNIT, **score(got, ref, y)})
        base = result["int8"]["ort_optimized"]["mad"]
        for row in rows:
            row["mad_recovered_pct"] = round(100 * (base - row["mad"]) / base, 1) if base else 0.0
        rows.sort(key=lambda r: r["mad"])
        result["dequantize_one_node"] = rows
        result["dequantize_one_group"] = []
        for group, labels in sorted(groups.items()):
            got = logits(session(dequantize_inputs(main_model, set(labels), floats)), x)
            s = score(got, ref, y)
            result["dequantize_one_group"].append(
                {"group": group, "nodes": len(labels), **s,
                 "mad_recovered_pct": round(100 * (base - s["mad"]) / base, 1) if base else 0.0})
        result["dequantize_one_group"].sort(key=lambda r: r["mad"])
        # the opposite view: only one group quantized, everything else float
        everything = {node_label(n) for n in nodes} | {OUTPUT_UNIT}
        result["only_one_group_quantized"] = []
        for group, labels in sorted(groups.items()):
            got = logits(session(dequantize_inputs(main_model, everything - set(labels), floats)), x)
            result["only_one_group_quantized"].append({"group": group, "nodes": len(labels), **score(got, ref, y)})
        result["only_one_group_quantized"].sort(key=lambda r: -r["mad"])

    if args.calibration_variants:
        variants = []
        for method in prec.CALIBRATION_METHODS:
            for count in (64, 512, len(train)):
                if method == "entropy" and count != 512:
                    continue  # entropy is slow and matched minmax in results/precision-cpu
                calib = (calib_default if count == 512 else
                         calibration_images(train, count, args.seed + 1).numpy().astype(np.float32))
                model, _ = quantize(fp32_path, calib, args.flavour, method, args.placement)
                variants.append({"method": method, "images": int(len(calib)),
                                 "ort_optimized": score(logits(session(model), x), ref, y),
                                 "qdq_reference": score(logits(session(model, optimize=False), x), ref, y)})
                print(f"calibration {method} {len(calib)}: {variants[-1]['ort_optimized']}", file=sys.stderr)
        result["calibration_variants"] = variants

    result["wall_s"] = round(time.perf_counter() - started, 1)
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
