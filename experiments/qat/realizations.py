"""One int8 scheme, two runtimes: the ONNX Runtime file vs the same quantization simulated in torch.

The TensorRT-flavour int8 file of a subnet (plain, MinMax) is run in ONNX Runtime; the same
scheme (MinMax ranges over the same calibration images, so the same activation scales and
integer weights as the file's) is simulated in torch with ``qat.py``'s fake-quantized layers.
Prints, per split, how many predictions each changes against the fp32 file and how many they change against each other.

    python experiments/qat/realizations.py RUN [--subnet largest]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qat as Q  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--subnet", default="largest")
    ap.add_argument("--method", default="minmax")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from ofa_deploy.evaluate.bn import recalibrated_subnet
    from ofa_deploy.export.images import export_images
    from ofa_deploy.export.precision import convert_precision
    from ofa_deploy.export.to_onnx import export_onnx, ort_session, run_onnx
    from ofa_deploy.weights import load_supernet

    supernet, config = load_supernet(args.run)
    space = supernet.space
    data = export_images(config, seed=0, validation=True)
    train = data.train
    net = recalibrated_subnet(supernet, getattr(space, args.subnet)(), train, seed=0).eval()
    calib = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:512]]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        shape = (space.in_channels, space.image_size, space.image_size)
        export_onnx(net, w / "fp32.onnx", input_shape=shape, opset=17, dynamic_batch=True)
        convert_precision(w / "fp32.onnx", w / "int8.onnx", "int8", calibration=calib.numpy(), method=args.method,
                          for_tensorrt=True)
        sim = copy.deepcopy(net).eval()
        layers = Q._wrap(sim, "tensorrt")
        Q._quantized_skips(sim)
        with torch.no_grad():
            sim(calib)  # the MinMax pass: the same ranges the file's calibration found
            for layer in layers:
                layer.observing = False
            for split, (x, y) in (("val", data.validation), ("test", data.eval)):
                ref = run_onnx(ort_session(w / "fp32.onnx"), x.numpy())
                real = run_onnx(ort_session(w / "int8.onnx"), x.numpy())
                simulated = sim(x).numpy()

                def changed(a: np.ndarray, b: np.ndarray) -> int:
                    return int((a.argmax(1) != b.argmax(1)).sum())

                rows.append({
                    "split": split, "images": int(len(y)),
                    "top1": {k: float((v.argmax(1) == y.numpy()).mean())
                             for k, v in (("fp32", ref), ("onnxruntime_file", real), ("torch_simulation", simulated))},
                    "changed_vs_fp32": {"onnxruntime_file": changed(real, ref),
                                        "torch_simulation": changed(simulated, ref)},
                    "changed_file_vs_simulation": changed(real, simulated),
                    "mean_abs_logit_diff": {"file_vs_fp32": float(np.abs(real - ref).mean()),
                                            "simulation_vs_fp32": float(np.abs(simulated - ref).mean()),
                                            "file_vs_simulation": float(np.abs(real - simulated).mean())}})
    print(json.dumps({"command": "python " + " ".join(sys.argv), "run": str(args.run), "subnet": args.subnet,
                      "flavour": "tensorrt", "calibration": args.method, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
