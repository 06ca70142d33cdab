import numpy as np
import pytest
from PIL import Image

from movingbg.io.video import VideoReadError, fit_size, is_video_source, read_video, write_video


def _frames(t=10, h=48, w=64):
    f = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        f[i, 10:30, 5 + 3 * i:25 + 3 * i] = (200, 60, 40)
    return f


@pytest.mark.parametrize("ext,codec,tol", [(".mp4", "libx264", 3), (".webm", "libvpx-vp9", 3), (".gif", "gif", 12),
                                           (".mov", "libx264", 3)])
def test_write_then_read_round_trip(tmp_path, ext, codec, tol):
    f = _frames()
    path = write_video(tmp_path / f"clip{ext}", f, 12.0, codec=codec)
    v = read_video(path)
    assert v.frames.shape == f.shape and v.frames.dtype == np.uint8
    assert np.abs(v.frames.astype(int) - f).mean() < tol
    assert v.fps == pytest.approx(12.0, rel=0.05) and v.source_frame_count == 10
    assert not list(tmp_path.glob(".tmp-*"))
    assert path.stat().st_mode & 0o777 == 0o644  # readable like any saved file, not mkstemp's 0600


def test_options_start_every_nth_cap_and_resize(tmp_path):
    path = write_video(tmp_path / "c.mp4", _frames(), 12.0)
    v = read_video(path, max_frames=3, start=2, every_nth=2, width=32)
    assert v.frames.shape == (3, 24, 32, 3) and v.fps == pytest.approx(6.0) and v.source_frame_count == 4
    assert fit_size(640, 480, 0, 100) == (128, 96) and fit_size(640, 480, 0, 0) == (640, 480)


def test_image_folder_in_natural_order(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    f = _frames(t=11)
    for i, frame in enumerate(f):
        Image.fromarray(frame).save(folder / f"frame{i}.png")  # frame10 must come after frame9
    assert is_video_source(folder)
    v = read_video(folder, sequence_fps=8)
    assert np.array_equal(v.frames, f) and v.fps == 8


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VideoReadError, match="empty file"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoReadError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    with pytest.raises(VideoReadError, match="not a video"):
        read_video(tmp_path / "notes.txt")
    with pytest.raises(VideoReadError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    path = write_video(tmp_path / "c.mp4", _frames(t=3), 12.0)
    with pytest.raises(VideoReadError, match="no frames after start=5"):
        read_video(path, start=5)
    with pytest.raises(ValueError, match="frames must be"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8), np.uint8), 12.0)
