"""Run the registered ONNX model with ONNX Runtime on a block of decoded feature columns.

Input convention (the trainer exports with skl2onnx): one input per feature, named as the feature,
shape [None, 1]; float32 for numeric (NaN for NULL), string for categorical (NULL -> "__missing__");
output `probabilities` [None, 2], column 1 = churn. An artifact that does not follow it is refused
(ARTIFACT_INTEGRITY) before anything is read or written.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

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

    def churn_probability(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """float32 churn probabilities for the block's rows, in order.

        `columns`: one array per feature, float32 with NaN for NULL (numeric) or str objects with
        MISSING for NULL (categorical), as `predictor.pgcopy` decodes them.
        """
        rows = len(next(iter(columns.values()))) if columns else 0
        if rows == 0:
            return np.empty(0, dtype=np.float32)
        inputs = {f["name"]: columns[f["name"]].reshape(-1, 1) for f in self.features}
        (probabilities,) = self.session.run([OUTPUT], inputs)
        return np.ascontiguousarray(np.clip(probabilities[:, 1], 0.0, 1.0), dtype=np.float32)
