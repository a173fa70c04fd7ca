"""`python -m benchmarks.studies.profile_ops FOLDER`: where a session's time goes, by operator type.

Runs one exported graph on a batch of same-length texts with ONNX Runtime's profiler on and prints
each operator type's kernel time per run and share, and the run's wall time (warm-up excluded).
This is how the README's "where the time goes" figures were taken.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.profile_ops", description=__doc__.split("\n")[0]
    )
    parser.add_argument("folder", type=Path, help="a folder written by `gist-onnx export`")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8", "fp16"])
    parser.add_argument("--batch", type=int, default=32, help="texts per run (default 32)")
    parser.add_argument(
        "--tokens", type=int, default=14, help="tokens per text, special tokens included (default 14)"
    )
    parser.add_argument("--runs", type=int, default=5, help="profiled runs after one warm-up (default 5)")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from gist_onnx.manifest import read_manifest

    manifest = read_manifest(args.folder)
    shape = (args.batch, args.tokens)
    feeds = {
        "input_ids": np.full(shape, 2000, dtype=np.int64),  # an ordinary word piece: speed ignores which
        "attention_mask": np.ones(shape, dtype=np.int64),
        "token_type_ids": np.zeros(shape, dtype=np.int64),
    }
    options = ort.SessionOptions()
    options.enable_profiling = True
    session = ort.InferenceSession(
        str(args.folder / manifest.graphs[args.precision].file), options, providers=["CPUExecutionProvider"]
    )
    inputs = {name: feeds[name] for name in manifest.inputs}
    session.run(None, inputs)
    for _ in range(args.runs):
        session.run(None, inputs)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()

    model_runs = [e for e in events if e["name"] == "model_run"]
    warm_up_end = model_runs[0]["ts"] + model_runs[0]["dur"]
    per_op: Counter[str] = Counter()
    for event in events:
        if (
            event.get("cat") == "Node"
            and event["name"].endswith("_kernel_time")
            and event["ts"] > warm_up_end
        ):
            per_op[event["args"]["op_name"]] += event["dur"] / args.runs
    total = sum(per_op.values())
    wall = np.median([e["dur"] for e in model_runs[1:]])
    print(f"{args.folder} {args.precision}, batch {args.batch} x {args.tokens} tokens: "
          f"run median {wall / 1e3:.1f} ms, kernels {total / 1e3:.1f} ms per run")  # fmt: skip
    for op, micros in per_op.most_common(12):
        print(f"  {op:28s} {micros / 1e3:9.2f} ms  {100 * micros / total:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
