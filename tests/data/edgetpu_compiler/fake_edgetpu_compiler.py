#!/usr/bin/env python3
"""A stand-in for edgetpu_compiler in tests (see README.md here): replays a real published compiler
log verbatim, exits with $FAKE_EDGETPU_EXIT, and when the log reports a compiled model writes the
output models the real compiler would write. It computes nothing: the numbers are the log's."""

import argparse
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_LOG = "yolov5s_224_v16.log"       # real output of edgetpu_compiler 16 (README.md here)


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
    log = (HERE / os.environ.get("FAKE_EDGETPU_LOG", DEFAULT_LOG)).read_text()   # an absolute path stays
    sys.stdout.write(log)
    code = int(os.environ.get("FAKE_EDGETPU_EXIT", "0"))
    if code == 0 and "Model compiled successfully" in log:
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
    return code


if __name__ == "__main__":
    sys.exit(main())
