"""EdgeQuant's Akida 1.0 driver, version 1: run with the akida toolchain's own interpreter, never imported.

    python akida1_convert.py request.json result.json

Request: ``model`` (a Keras 2 / tf_keras ``.h5`` file, one input, NHWC), ``inputs`` (.npz, keys
``<batch>/x``: uint8-valued samples in the Keras model's layout), ``outputs`` (.npz to write, keys
``<batch>/y``), ``out`` (.fbz path), ``weight_bits`` and ``act_bits`` (1, 2 or 4).
In ``cnn2snn.set_akida_version(AkidaVersion.v1)``, ``cnn2snn.quantize`` quantizes the Keras model
(weights ``weight_bits``, the input layer's weights 8 bits, activations ``act_bits``; no calibration:
Akida 1.0's quantizers are set from the weights and the ReLU bounds), ``cnn2snn.convert`` maps it to
an Akida 1.0 model, which is saved (.fbz) and run on Akida's software backend (``akida.Model.predict``).
The result lists the Akida layers with their weight bits, and the Keras layers that hold weights, so that EdgeQuant
can tell a conversion that stopped early from a whole one.
"""

import time

from _driver import predict_batches, serve

DRIVER_VERSION = 1


def body(run):
    req = run.req
    import akida
    import cnn2snn
    import numpy as np
    import tf_keras

    run.result["versions"] = {
        "akida": akida.__version__,
        "cnn2snn": cnn2snn.__version__,
        "tf_keras": tf_keras.__version__,
    }
    run.stage = "load"
    model = tf_keras.models.load_model(req["model"], compile=False)
    run.result["keras_layers"] = [layer.name for layer in model.layers]
    run.result["keras_weighted"] = [  # the layers an Akida layer must carry (BatchNorm folds into its conv)
        layer.name
        for layer in model.layers
        if layer.get_weights() and type(layer).__name__ != "BatchNormalization"
    ]
    with cnn2snn.set_akida_version(cnn2snn.AkidaVersion.v1):
        run.stage = "quantize"
        t0 = time.perf_counter()
        qmodel = cnn2snn.quantize(
            model,
            weight_quantization=int(req["weight_bits"]),
            activ_quantization=int(req["act_bits"]),
            input_weight_quantization=8,
        )
        run.result["quantize_s"] = round(time.perf_counter() - t0, 3)
        run.stage = "convert"
        t0 = time.perf_counter()
        amodel = cnn2snn.convert(qmodel)
        run.result["convert_s"] = round(time.perf_counter() - t0, 3)
    run.result["layers"] = [
        [
            layer.name,
            str(layer.parameters.layer_type).split(".")[-1],
            getattr(layer.parameters, "weights_bits", None),
        ]
        for layer in amodel.layers
    ]
    run.result["ip_version"] = str(amodel.ip_version)
    run.result["output_shape"] = [int(d) for d in amodel.output_shape]
    amodel.save(req["out"])
    run.stage = "run"
    predict_batches(amodel, req["inputs"], req["outputs"], np.uint8)


if __name__ == "__main__":
    serve(body, DRIVER_VERSION)
