#!/usr/bin/env python3
"""A stand-in for edgetpu_compiler in tests (see README.md here): prints a recorded log, exits with
$FAKE_EDGETPU_EXIT, and on success writes the output models the real compiler would write."""

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED_STEM = "ssdlite_mobilenet_v2_person_int8"


def main() -> int:
    p = argparse.ArgumentParser(prog="edgetpu_compiler")
    p.add_argument("model")
    p.add_argument("-o", "--out_dir", default=".")
    p.add_argument("-s", "--show_operations", action="store_true")
    p.add_argument("-m", "--min_runtime_version", type=int)
    p.add_argument("-a", "--enable_multiple_subgraphs", action="store_true")
    p.add_argument("-d", "--search_delegate", action="store_true")
    p.add_argument("-t", "--timeout_sec", type=int, default=180)
    p.add_argument("-n", "--num_segments", type=int)
    args = p.parse_args()
    with open(os.environ.get("FAKE_EDGETPU_ARGS_FILE", os.devnull), "w") as f:
        f.write("\n".join(sys.argv[1:]))
    model = Path(args.model)
    log = (HERE / os.environ.get("FAKE_EDGETPU_LOG", "ssdlite_success.log")).read_text()
    sys.stdout.write(log.replace(RECORDED_STEM, model.stem))
    code = int(os.environ.get("FAKE_EDGETPU_EXIT", "0"))
    if code == 0 and "Compilation failed" not in log and "Aborting" not in log:
        sys.path.insert(0, str(HERE.parents[2]))
        from tests.helpers import fake_edgetpu_model
        out = Path(args.out_dir)
        n = args.num_segments or 1
        names = [f"{model.stem}_edgetpu.tflite"] if n == 1 else \
            [f"{model.stem}_segment_{i}_of_{n}_edgetpu.tflite" for i in range(n)]
        for name in names:
            tmp = out / (name + ".tmp")
            shutil.copyfile(model, tmp)
            fake_edgetpu_model(tmp, out / name)
            tmp.unlink()
        (out / f"{model.stem}_edgetpu.log").write_text(log)
    return code


if __name__ == "__main__":
    sys.exit(main())
