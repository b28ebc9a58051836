"""The metric writer: JSON lines and TensorBoard events, and a training start that does not pay for
importing PyTorch (tensorboardX imports it whenever it is installed)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_the_writer_logs_scalars_without_importing_torch_and_torch_still_imports_afterwards(tmp_path):
    # A fresh interpreter: the test process itself may have imported torch already.
    script = textwrap.dedent(f"""
        import json, sys
        from bisenet_jax.train.monitoring import MetricWriter
        writer = MetricWriter({str(tmp_path)!r}, enabled=True)
        writer.scalars(7, {{"loss": 1.5}}, prefix="train/")
        writer.close()
        torch_after_writer = "torch" in sys.modules
        import torch  # the block on torch was lifted
        print(json.dumps({{"torch_after_writer": torch_after_writer, "tensor": float(torch.ones(2).sum())}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch_after_writer": False, "tensor": 2.0}
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert line["step"] == 7 and line["train/loss"] == 1.5
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes()
