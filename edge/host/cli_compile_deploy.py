"""``edge-host check-edgetpu | compile | bundle | deploy``: from an int8 model to a running Pi.

:func:`register` adds the sub-commands to the ``edge-host`` parser. None of them needs TensorFlow.
Exit status: 0 ok; 1 the model does not meet the gate (too many ops on the CPU) or the remote
check failed; 2 bad input or a missing tool (the message says which and how to fix it).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge.errors import ConfigError
from edge.host.cli_quantize_eval import positive_int
from edge.runtime.manifest import MAX_SEGMENTS

log = logging.getLogger("edge.host")


def _max_cpu_ops(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be ≥ 0")
    return n


def _segments(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SEGMENTS:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer from 1 to {MAX_SEGMENTS} (one Edge TPU "
                                         "per segment; edgetpu_compiler documents no bound, no Pi carries more)")
    return n


def _gate(cpu_ops: int, limit: int | None, what: str) -> int:
    if limit is not None and cpu_ops > limit:
        print(f"FAIL: {cpu_ops} ops {what} on the CPU, more than --max-cpu-ops {limit}")
        return 1
    return 0


def cmd_check_edgetpu(args: argparse.Namespace) -> int:
    from edge.host.edgetpu_check import check_file

    report = check_file(args.model)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines(details=args.details)))
    if report.tpu_ops == 0:
        print("FAIL: no operation would run on the Edge TPU")
        return 1
    return _gate(report.cpu_ops, args.max_cpu_ops, "would run")


def cmd_compile(args: argparse.Namespace) -> int:
    from edge.host import compiler as c

    model = Path(args.model)
    c.validate_source(model)                 # a bad model is reported before a missing compiler
    compiler = c.find_compiler(args.compiler)
    options = c.CompileOptions(out_dir=Path(args.out) if args.out else model.parent,
                               show_operations=True, min_runtime_version=args.min_runtime_version,
                               multiple_subgraphs=args.multiple_subgraphs, search_delegate=args.search_delegate,
                               num_segments=args.num_segments, timeout_s=args.timeout)
    result = c.compile_model(model, options, compiler)
    if args.json:
        print(json.dumps(result.log.as_dict(), indent=2))
    else:
        print("\n".join(result.log.lines()))
    for i, path in enumerate(result.outputs):
        print(f"edgetpu {'segment ' + str(i) if len(result.outputs) > 1 else 'model'}: {path}")
    for path in c.write_manifests(model, result):
        print(f"manifest: {path}")
    return _gate(result.log.cpu_ops, args.max_cpu_ops, "run")


def cmd_bundle(args: argparse.Namespace) -> int:
    from edge.host import bundle as b

    out = b.build_bundle(Path(args.model_dir), Path(args.out),
                         config=Path(args.config) if args.config else None,
                         extra=[Path(p) for p in args.include],
                         sign_key=Path(args.sign) if args.sign else None)
    print(f"bundle: {out.path} ({out.size_bytes / 1e6:.2f} MB, {len(out.files)} files)")
    for name in out.files:
        print(f"  {name}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from edge.host import deploy as d

    if not args.bundle and not args.model_dir:
        raise ConfigError("deploy needs --bundle FILE or --model-dir DIR", "see edge-host deploy --help")
    target = d.Target.parse(args.host, args.path, port=args.port, identity=args.identity,
                            ssh_options=args.ssh_option)
    report = d.deploy(Path(args.bundle) if args.bundle else None,
                      Path(args.model_dir) if args.model_dir else None, target,
                      unit=args.reload or args.restart, action="restart" if args.restart else "reload",
                      dry_run=args.dry_run, sign_key=Path(args.sign) if args.sign else None,
                      trusted_keys=args.trusted_keys,
                      local_keys=Path(args.local_trusted_keys) if args.local_trusted_keys else None)
    print("\n".join(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-edgetpu", help="static check of a .tflite against the Edge TPU requirements")
    p.add_argument("model", help="the int8 .tflite model")
    p.add_argument("--max-cpu-ops", type=_max_cpu_ops, default=None,
                   help="exit 1 when more ops would run on the CPU (default: no limit)")
    p.add_argument("--details", action="store_true", help="one line per op that would run on the CPU")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check_edgetpu)

    p = sub.add_parser("compile", help="run edgetpu_compiler, parse its log, gate on CPU ops, write manifests")
    p.add_argument("model", help="the full-integer int8 .tflite model")
    p.add_argument("--out", "-o", help="output directory (default: the model's directory)")
    p.add_argument("--compiler", help="path of edgetpu_compiler (default: found on PATH)")
    p.add_argument("--max-cpu-ops", type=_max_cpu_ops, default=None,
                   help="exit 1 when more ops run on the CPU (default: no limit)")
    p.add_argument("--min-runtime-version", "-m", type=positive_int, default=None,
                   help="oldest Edge TPU runtime the model must run on (compiler -m)")
    p.add_argument("--multiple-subgraphs", "-a", action="store_true",
                   help="let the compiler map supported ops after a CPU op (compiler -a, experimental)")
    p.add_argument("--search-delegate", "-d", action="store_true",
                   help="search for an earlier stopping point on compiler failures (compiler -d)")
    p.add_argument("--segments", "--num-segments", dest="num_segments", type=_segments, default=None,
                   metavar="K", help=f"split into K segments (compiler --num_segments, 1 to {MAX_SEGMENTS}) to "
                                     "pipeline over K Edge TPUs; the manifest lists them as \"segments\"")
    p.add_argument("--timeout", type=positive_int, default=180, help="compiler timeout in seconds (default 180)")
    p.add_argument("--json", action="store_true", help="print the parsed log as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("bundle", help="model directory (+ config) → tar.gz with SHA-256 sums")
    p.add_argument("model_dir", help="directory with manifest.json (models, labels)")
    p.add_argument("--out", "-o", required=True, help="bundle file (.tar.gz)")
    p.add_argument("--config", help="edge TOML configuration to ship as config.toml")
    p.add_argument("--include", action="append", default=[], help="another file to ship (repeatable)")
    p.add_argument("--sign", metavar="KEY", help="sign SHA256SUMS with this ssh private key (ssh-keygen -Y sign, "
                                                 "namespace edge-detect-bundle) into SHA256SUMS.sig")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("deploy", help="copy a bundle to a Pi over ssh/rsync, verify, reload the service")
    p.add_argument("host", help="[user@]host of the Pi")
    p.add_argument("--bundle", help="a bundle made by edge-host bundle")
    p.add_argument("--model-dir", help="or: bundle this model directory on the fly")
    p.add_argument("--path", default="/opt/edge-detect/models/current",
                   help="directory on the Pi (default /opt/edge-detect/models/current)")
    p.add_argument("--port", type=positive_int, default=None, help="ssh port")
    p.add_argument("--identity", "-i", help="ssh private key")
    p.add_argument("--ssh-option", "-O", action="append", default=[], help="extra ssh -o option (repeatable)")
    unit = p.add_mutually_exclusive_group()
    unit.add_argument("--reload", metavar="UNIT", help="systemd unit to reload after the copy (e.g. edge-detect): "
                                                     "the service loads the new model without restarting")
    unit.add_argument("--restart", metavar="UNIT", help="systemd unit to restart after the copy instead")
    p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    p.add_argument("--sign", metavar="KEY", help="with --model-dir: sign the bundle made on the fly with this ssh "
                                                 "private key")
    p.add_argument("--trusted-keys", metavar="PATH", default="/etc/edge-detect/trusted_keys",
                   help="allowed_signers file ON THE DEVICE; when it is not empty, the device refuses unsigned "
                        "bundles and bundles not signed by a key in it (default /etc/edge-detect/trusted_keys)")
    p.add_argument("--local-trusted-keys", metavar="PATH", help="allowed_signers file on this host: refuse an "
                                                                "unsigned or untrusted bundle before copying it")
    p.set_defaults(func=cmd_deploy)
