"""Export a trained checkpoint (separation, enhancement or speaker counting) to MindIR (or ONNX /
AIR) for deployment.

    python export.py --ckpt CKPT [-c CONFIG] --file-name NAME [--file-format MINDIR] [--length N]
        [--device-target auto]

Separation: --length 0 (default): the graph takes any length (dynamic time axis); --length N:
exactly N samples, for devices that need static shapes (Ascend 310 through MindSpore Lite; the
offline pipeline then cuts recordings into windows of N). The graph maps `mixture (1, time)`
float32 to `estimate (1, C, time)`.

Enhancement (R-Transformer): the mask network only, the STFT stays on the host: `features
(1, frames, bins)` float32 + `frame_lengths (1,)` int32 -> `mask (1, frames, bins)`, any number
of frames (--length must stay 0).

Speaker counting (CountNet): the network only, the log-mel features stay on the host: `features
(1, frames, n_mels)` float32 -> `logits (1, counts)`, any number of frames (--length must stay 0).

After writing, the file is loaded back and run next to the checkpoint's network on the same
random inputs (three lengths, or frame counts, for a dynamic graph); the largest difference is
printed, and the export fails (exit status 2) when it is beyond float tolerance. ONNX needs --length and
onnxruntime (for the check); AIR needs an Ascend device and is not checked (MindSpore cannot load
AIR files).
"""
import argparse
import time

from src.cli import run_main


def parse_args(argv=None):
    from src.export import FORMATS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", "--ckpt_file", dest="ckpt", required=True, help="checkpoint (train.py's best.ckpt)")
    parser.add_argument("-c", "--config", help="yaml config, for checkpoints that do not store one")
    parser.add_argument("--file-name", "--file_name", dest="file_name", required=True,
                        help="output file; the format's suffix (.mindir, .onnx, .air) is added when missing")
    parser.add_argument("--file-format", "--file_format", dest="file_format", default="MINDIR",
                        type=str.upper, choices=FORMATS)
    parser.add_argument("--length", type=int, default=0,
                        help="input samples of a fixed-length graph; 0 = any length (default)")
    parser.add_argument("--device-target", default="auto", help="auto (Ascend > GPU > CPU) | Ascend | GPU | CPU")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from src.config import load_config
    from src.errors import check_output_file
    from src.export import check_request, compare_with_network, export_network, output_path
    from src.runtime.checkpoint import load_model
    from src.runtime.device import use_device
    from src.tasks import task_of

    check_output_file(output_path(args.file_name, args.file_format), "--file-name")
    device = use_device(args.device_target)
    net, cfg = load_model(args.ckpt, load_config(args.config) if args.config else None)
    graph = task_of(cfg).export_graph(cfg)
    graph.check_export(args.file_format, args.length)
    check_request(args.file_format, args.length, graph.min_length, device)

    started = time.time()
    path = export_network(net, args.file_name, args.file_format, args.length, graph)
    print(f"exported {path}: {args.file_format}, {graph.describe(args.length)} [{time.time() - started:.1f} s]")
    if args.file_format == "AIR":
        print("note: AIR files cannot be loaded by MindSpore, so this one was not compared with the network")
        return 0
    for length, diff, peak in compare_with_network(net, path, args.file_format, graph.check_lengths(args.length),
                                                   graph=graph):
        print(f"check at {length} {graph.unit}: max |exported - network| = {diff:.3g} (output peak {peak:.3g})")
    print(f"{path}: matches the network")
    return 0


if __name__ == "__main__":
    run_main(main)
