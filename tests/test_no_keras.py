"""No Keras anywhere: build, train one step, quantize and reload a SavedModel in a clean process."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs in a fresh interpreter so that nothing another test imported can hide or cause a Keras import.
SCRIPT = r"""
import json, sys, tempfile, warnings
import numpy as np
from mcugen import mobilenet_v2 as mnv2
from mcugen.quantize import QuantizeOptions, quantize_module, quantize_saved_model, operator_names
from mcugen.train import TrainOptions, train

tf = mnv2.import_tensorflow()
module = mnv2.build_mobilenet_v2(0.35, 32, classes=3, seed=0, batch_norm=True)
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
y = np.array([0, 1, 2, 0])
before = module.kernels["stem"].numpy().copy()
result = train(module, x, y, TrainOptions(epochs=1, batch_size=4, progress=False))  # one step
changed = bool(np.any(module.kernels["stem"].numpy() != before))
model = quantize_module(module, x)
with tempfile.TemporaryDirectory() as saved:
    export = module.export_module()
    tf.saved_model.save(export, saved, signatures=export.serving_function())
    reloaded = quantize_saved_model(saved, x)
keras = sorted(name for name in sys.modules
               if name.split(".")[0] in ("keras", "tf_keras") or name.startswith("tensorflow.keras"))
print(json.dumps({"keras": keras, "steps": len(result.history), "changed": changed,
                  "ops": sorted(set(operator_names(model))), "reloaded_ops": sorted(set(operator_names(reloaded))),
                  "tensorflow": tf.__version__}))
"""


def test_build_train_quantize_without_keras():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # TensorFlow's own legacy shim (tensorflow.python.keras.*) is part of TF, not the Keras package.
    assert report["keras"] == [], report["keras"]
    assert report["tensorflow"].startswith("2.")
    assert report["steps"] == 1 and report["changed"]
    assert "CONV_2D" in report["ops"] and "FULLY_CONNECTED" in report["ops"]
    assert report["reloaded_ops"] == report["ops"]
