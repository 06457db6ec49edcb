"""Does the quantization-aware fine-tune (export/qat.py) earn its place? Per subnet and flavour:
plain int8 (PTQ, one calibration) of the BN-recalibrated subnet vs of its QAT copy; each file's
top-1 on validation and test and its agreement with the fp32 subnet (before the fine-tune).

    python experiments/qat/qat_vs_ptq.py RUN [--subnets largest,smallest] [--steps 300] [--lr 1e-3] > out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qat import qat_finetune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--subnets", default="largest,smallest")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flavours", default="tensorrt,onnxruntime")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from ofa_deploy.evaluate.bn import recalibrated_subnet
    from ofa_deploy.export.images import export_images
    from ofa_deploy.export.precision import convert_precision
    from ofa_deploy.export.to_onnx import export_onnx, ort_session, run_onnx
    from ofa_deploy.run import read_config
    from ofa_deploy.space import Subnet
    from ofa_deploy.weights import load_supernet

    config = read_config(args.run)
    supernet, _ = load_supernet(args.run)
    space = supernet.space
    data = export_images(config, seed=args.seed, validation=True)
    train = data.train
    splits = {"val": data.validation, "test": data.eval}
    shape = (space.in_channels, space.image_size, space.image_size)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        w = Path(work)
        for name in args.subnets.split(","):
            sub = getattr(space, name)() if name in ("largest", "smallest", "middle") else Subnet.parse(name, space)
            net = recalibrated_subnet(supernet, sub, train, seed=args.seed).eval().cpu()
            export_onnx(net, w / "fp32.onnx", input_shape=shape, opset=17, dynamic_batch=True)
            ref = {k: run_onnx(ort_session(w / "fp32.onnx"), x.numpy()) for k, (x, y) in splits.items()}
            calib = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:512]].numpy()
            row = {"subnet": name,
                   "fp32": {k: float((ref[k].argmax(1) == y.numpy()).mean()) for k, (x, y) in splits.items()}}
            for flavour in args.flavours.split(","):
                trt = flavour == "tensorrt"
                t0 = time.perf_counter()
                qnet, rec = qat_finetune(net, train, flavour=flavour, steps=args.steps, lr=args.lr, seed=args.seed)
                export_onnx(qnet, w / "qat.onnx", input_shape=shape, opset=17, dynamic_batch=True)
                for label, src in (("ptq", "fp32.onnx"), ("qat", "qat.onnx")):
                    convert_precision(w / src, w / "int8.onnx", "int8", calibration=calib, method=args.method,
                                      for_tensorrt=trt)
                    out = {}
                    for k, (x, y) in splits.items():
                        got = run_onnx(ort_session(w / "int8.onnx"), x.numpy())
                        out[k] = {"top1": float((got.argmax(1) == y.numpy()).mean()),
                                  "agree": float((got.argmax(1) == ref[k].argmax(1)).mean()),
                                  "changed": int((got.argmax(1) != ref[k].argmax(1)).sum()),
                                  "mad": float(np.abs(got - ref[k]).mean())}
                    if label == "qat":
                        qf = run_onnx(ort_session(w / "qat.onnx"), splits["test"][0].numpy())
                        out["qat_fp32_test_top1"] = float((qf.argmax(1) == splits["test"][1].numpy()).mean())
                        out["record"] = rec
                    row[f"{flavour}-{label}"] = out
                row[f"{flavour}-seconds"] = round(time.perf_counter() - t0, 1)
                print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    print(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
