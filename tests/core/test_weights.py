import functools
import hashlib
import http.server
import threading

import pytest

from movingbg.weights import ChecksumError, WeightSpec, WeightsNotFoundError, ensure_weight


@pytest.fixture()
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_verifies_hash_and_reports_progress(http_dir, tmp_path):
    root, url = http_dir
    payload = b"weights" * 1000
    (root / "w.onnx").write_bytes(payload)
    spec = WeightSpec("w.onnx", (url + "/missing.onnx", url + "/w.onnx"), hashlib.sha256(payload).hexdigest(),
                      md5=hashlib.md5(payload).hexdigest())
    seen = []
    path = ensure_weight(spec, [tmp_path / "user"], tmp_path / "dl", progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == payload
    assert path.stat().st_mode & 0o777 == 0o644
    assert seen[-1] == (len(payload), len(payload))
    # found locally the second time: no download
    assert ensure_weight(spec, [tmp_path / "dl"], tmp_path / "other", allow_download=False) == path


def test_wrong_hash_leaves_nothing(http_dir, tmp_path):
    root, url = http_dir
    (root / "w.onnx").write_bytes(b"tampered")
    spec = WeightSpec("w.onnx", (url + "/w.onnx",), "0" * 64)
    with pytest.raises(ChecksumError, match="SHA-256"):
        ensure_weight(spec, [], tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_offline_error_names_file_urls_and_folder(tmp_path):
    spec = WeightSpec("dw-ll_ucoco_384.onnx", ("http://127.0.0.1:9/dw.onnx",), "a" * 64, "DWPose pose model")
    with pytest.raises(WeightsNotFoundError) as info:
        ensure_weight(spec, [tmp_path / "a"], tmp_path / "pose")
    msg = str(info.value)
    assert "dw-ll_ucoco_384.onnx" in msg and "http://127.0.0.1:9/dw.onnx" in msg and str(tmp_path / "pose") in msg


def test_spec_without_checksum_is_rejected():
    with pytest.raises(ValueError):
        WeightSpec("x.onnx", ("http://example/x",), None)
