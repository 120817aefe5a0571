"""Runners of exported MindIR files for offline inference (infer.py): MindSpore Lite's Python API
when installed, else MindSpore's GraphCell, and `run_bins`, which feeds every input of a bin
folder (src/inference/offline.py) to a runner and writes the results. What a graph must take
and return is the task's `check_offline_inputs` / `check_offline_output` (src/tasks/)."""
import os
import time

import mindspore as ms
import numpy as np
from mindspore.train import mind_ir_pb2
from tqdm import tqdm

from src.inference.offline import BIN_DTYPE, RUN_NAME, OfflineInferenceError, read_index, read_inputs, write_json
from src.runtime.device import use_device


def mindir_input_shapes(path):
    """Input shapes stored in a MindIR file (MindSpore's protobuf), in input order, -1 for a
    dynamic axis: separation `[[1, time]]`, enhancement `[[1, frames, bins], [1]]`."""
    model = mind_ir_pb2.ModelProto()
    try:
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
        shapes = [[int(d) for d in graph_input.tensor[0].dims] for graph_input in model.graph.input]
    except Exception as err:  # protobuf raises DecodeError, an empty graph IndexError
        raise OfflineInferenceError(f"{path}: cannot be read as a MindIR file ({type(err).__name__}: {err})") from None
    if not shapes:
        raise OfflineInferenceError(f"{path}: a MindIR file without inputs")
    return shapes


class MindSporeRunner:
    """A MindIR file run by MindSpore's `nn.GraphCell` (GRAPH_MODE): numpy inputs in the graph's
    order -> numpy output (separation `(1, T) -> (1, C, T)`, enhancement `(1, F, B), (1,) -> (1, F, B)`).
    `input_shapes`: every input's shape in the file; `input_shape`: the first one's."""

    backend = "mindspore"

    def __init__(self, path, device_target="auto", device_id=0):
        self.device = use_device(device_target, device_id=device_id)
        self.input_shapes = mindir_input_shapes(path)
        self.input_shape = self.input_shapes[0]
        self.graph = ms.nn.GraphCell(ms.load(path))
        self._tensor = ms.Tensor

    def __call__(self, *inputs):
        return self.graph(*(self._tensor(x) for x in inputs)).asnumpy()


class LiteRunner:
    """A MindIR file run by MindSpore Lite's Python API (cloud-side inference package, Ascend
    310/310P, GPU or CPU): numpy inputs in the graph's order -> numpy output, as MindSporeRunner.
    Dynamic inputs are resized per call (CPU and GPU; on Ascend export a fixed length).

    UNTESTED: written from the MindSpore Lite 2.x API docs (Context.target, Model.build_from_file,
    get_inputs, resize, predict); mindspore-lite is not on PyPI, so it never ran in this project's tests.
    """

    backend = "mindspore_lite"

    def __init__(self, path, device_target="auto", device_id=0):
        import mindspore_lite as mslite
        if device_target == "auto":
            device_target = "Ascend" if os.path.exists(f"/dev/davinci{device_id}") else "CPU"
        self.device = device_target
        context = mslite.Context()
        context.target = [device_target.lower()]
        if device_target == "Ascend":
            context.ascend.device_id = device_id
        elif device_target == "GPU":
            context.gpu.device_id = device_id
        self.model = mslite.Model()
        self.model.build_from_file(path, mslite.ModelType.MINDIR, context)
        self.inputs = self.model.get_inputs()
        self.input_shapes = [[int(d) for d in tensor.shape] for tensor in self.inputs]
        self.input_shape = self.input_shapes[0]

    def __call__(self, *arrays):
        shapes = [list(a.shape) for a in arrays]
        if [[int(d) for d in tensor.shape] for tensor in self.inputs] != shapes:
            self.model.resize(self.inputs, shapes)
        for tensor, array in zip(self.inputs, arrays):
            tensor.set_data_from_numpy(array)
        return self.model.predict(self.inputs)[0].get_data_to_numpy()


def lite_available():
    try:
        import mindspore_lite  # noqa: F401
    except ImportError:
        return False
    return True


def open_runner(model_path, device_target="auto", device_id=0, backend="auto"):
    """A runner for `model_path`: MindSpore Lite when installed (backend "auto" or "lite"),
    otherwise MindSpore ("mindspore"). device_target: auto | Ascend | GPU | CPU."""
    if not os.path.isfile(model_path):
        raise OfflineInferenceError(f"{model_path}: model file not found (export one with export.py)")
    if backend == "auto":
        backend = "lite" if lite_available() else "mindspore"
    if backend == "lite":
        if not lite_available():
            raise OfflineInferenceError("backend 'lite' needs MindSpore Lite's Python package (mindspore_lite)")
        return LiteRunner(model_path, device_target, device_id)
    if backend != "mindspore":
        raise OfflineInferenceError(f"backend {backend!r}: use auto, lite or mindspore")
    return MindSporeRunner(model_path, device_target, device_id)


def run_bins(runner, model_path, bin_dir, result_dir, task, progress=True):
    """Run every entry of `bin_dir` through `runner` (`runner(*inputs)`, the entry's inputs in
    order), writing the outputs to `result_dir` (same names) and `result_dir/run.json`. `task`:
    the index's task (src.tasks.get_task(index["task"])), which checks the inputs and outputs.
    Returns the run summary (dict)."""
    index = read_index(bin_dir)
    task.check_offline_inputs(runner.input_shape, index, model_path, bin_dir)
    os.makedirs(result_dir, exist_ok=True)
    run_path = os.path.join(result_dir, RUN_NAME)
    if os.path.exists(run_path):
        os.remove(run_path)  # results are complete only once run.json is written again
    started, num_outputs = time.time(), None
    for name, info in tqdm(index["bins"].items(), disable=not progress, desc="inference", unit="input",
                           dynamic_ncols=True, mininterval=1):
        inputs = read_inputs(bin_dir, info)
        try:
            output = np.asarray(runner(*inputs))
        except Exception as err:  # the backends raise RuntimeError/ValueError with C++ messages
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            shapes = " + ".join(str(x.shape) for x in inputs)
            raise OfflineInferenceError(f"{os.path.join(bin_dir, name)}: {model_path} failed on this input of shape "
                                        f"{shapes}: {first_line}") from None
        task.check_offline_output(output, inputs, index, model_path, name)
        num_outputs = num_outputs or task.offline_num_outputs(output)
        output.astype(BIN_DTYPE).tofile(os.path.join(result_dir, name))
    elapsed = time.time() - started
    audio_seconds = sum(u["length"] for u in index["utterances"]) / index["sample_rate"]
    run = {"index_id": index["id"], "model": os.path.abspath(model_path), "backend": runner.backend,
           "device": runner.device, "input_shape": runner.input_shape, "num_outputs": num_outputs,
           "num_inputs": len(index["bins"]), "audio_seconds": round(audio_seconds, 3),
           "elapsed_seconds": round(elapsed, 3), "real_time_factor": round(elapsed / max(audio_seconds, 1e-9), 4)}
    write_json(run_path, run)
    return run

