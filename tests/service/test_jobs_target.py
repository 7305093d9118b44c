"""REST ``target=``: a job quantizes for the named target (plan and compliance from its profile)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job


def test_rest_target_ti_npu_plans_and_checks_for_the_target(server: Server) -> None:
    with server.client() as c:
        assert (
            upload(
                c, "models", "tinyti", tiny_model().SerializeToString(), "tinyti.onnx", overwrite="true"
            ).status_code
            == 201
        )
        assert upload(c, "datasets", "calibti", tiny_npz(), "calib.npz", overwrite="true").status_code == 201
        r = c.post(
            "/api/v1/model/tinyti/quantize",
            params={"dataset": "calibti", "method": "int8-static", "target": "ti-npu"},
        )
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "succeeded", job["error"]
        url = f"/api/v1/jobs/{job['job_id']}/artifacts"
        rep = c.get(f"{url}/tinyti_int8_ti-npu.json").json()
        comp = rep["compliance"]
        assert comp["target"] == "ti-npu"
        # by hand: the first conv reads 3 channels; TI's first conv (FCONV) takes exactly 1
        assert ("conv", "in_channels", "3", "exactly 1") in {
            (f["node"], f["rule"], f["found"], f["required"]) for f in comp["findings"]
        }
        model = onnx.load_from_string(c.get(f"{url}/tinyti_int8_ti-npu.onnx").content)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = [
        inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
    ]
    weight_and_act = [s for s in scales if s.dtype == np.float32]
    assert len(weight_and_act) >= 4
    for s in weight_and_act:  # the profile's power-of-two rule reached the REST job's plan
        assert np.all(np.log2(s.astype(np.float64)) == np.round(np.log2(s.astype(np.float64))))
