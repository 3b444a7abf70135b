"""Run the registered ONNX model on Arrow record batches with ONNX Runtime.

Input convention (the trainer exports with skl2onnx): one input per feature, named as the feature,
shape [None, 1]; float32 for numeric (NaN for NULL), string for categorical (NULL -> "__missing__");
output `probabilities` [None, 2], column 1 = churn. An artifact that does not follow it is refused
(ARTIFACT_INTEGRITY) before anything is read or written.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc

from mlp_common.exit_codes import ExitCode, StageError

MISSING = "__missing__"
OUTPUT = "probabilities"
_ONNX_TYPES = {"numeric": "tensor(float)", "categorical": "tensor(string)"}


class Scorer:
    """An ONNX Runtime session checked against the registry's feature list."""

    def __init__(self, artifact: bytes, features: list[dict[str, str]], version: int) -> None:
        self.features = features
        options = ort.SessionOptions()
        threads = os.environ.get("PREDICTOR_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise StageError(f"model version {version}: ONNX Runtime cannot load the artifact: {exc}", ExitCode.ARTIFACT_INTEGRITY) from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        problems = []
        for f in features:
            got = inputs.pop(f["name"], None)
            if got is None:
                problems.append(f"no input named {f['name']}")
            elif got.type != _ONNX_TYPES[f["type"]]:
                problems.append(f"input {f['name']} is {got.type}, expected {_ONNX_TYPES[f['type']]}")
        if inputs:
            problems.append(f"inputs not in the registry's feature list: {', '.join(inputs)}")
        if OUTPUT not in {o.name for o in self.session.get_outputs()}:
            problems.append(f"no output named {OUTPUT}")
        if problems:
            raise StageError(
                f"model version {version} does not follow the artifact convention: {'; '.join(problems)}", ExitCode.ARTIFACT_INTEGRITY
            )

    def inputs(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            column = batch.column(f["name"])
            if f["type"] == "numeric":
                values = pc.fill_null(column.cast(pa.float32()), np.float32("nan")).to_numpy(zero_copy_only=False)
            elif pa.types.is_dictionary(column.type):
                # one Python string per distinct category, not per row: index an array of the few values
                categories = np.array([*column.dictionary.cast(pa.string()).to_pylist(), MISSING], dtype=object)
                categories[:-1][column.dictionary.is_null().to_numpy(zero_copy_only=False)] = MISSING
                codes = pc.fill_null(column.indices, len(categories) - 1).to_numpy(zero_copy_only=False)
                values = categories[codes]
            else:
                values = pc.fill_null(column.cast(pa.string()), MISSING).to_numpy(zero_copy_only=False)
            out[f["name"]] = values.reshape(-1, 1)
        return out

    def churn_probability(self, batch: pa.RecordBatch) -> np.ndarray:
        """float32 churn probabilities for the batch's rows, in order."""
        if batch.num_rows == 0:
            return np.empty(0, dtype=np.float32)
        (probabilities,) = self.session.run([OUTPUT], self.inputs(batch))
        return np.ascontiguousarray(np.clip(probabilities[:, 1], 0.0, 1.0), dtype=np.float32)
