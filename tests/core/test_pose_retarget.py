"""Retargeting a driving skeleton onto a reference person's proportions and placement."""

import numpy as np
import pytest

from movingbg.preprocess.pose_format import FramePose, PersonPose
from movingbg.preprocess.retarget import BONES, bone_lengths, retarget_poses

# A standing person on a 512 x 768 canvas (OpenPose-18 order).
REF_BODY = np.array([
    [256, 120], [256, 180], [206, 182], [190, 260], [185, 330], [306, 182], [322, 260], [327, 330],
    [226, 360], [222, 480], [220, 600], [286, 360], [290, 480], [292, 600], [246, 110], [266, 110],
    [236, 118], [276, 118],
], np.float64)
REF_FEET = np.array([[300, 630], [310, 625], [288, 612], [212, 630], [202, 625], [224, 612]], np.float64)


def _with_conf(xy):
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def _hand(wrist, direction):
    """21 points fanning out from the wrist."""
    pts = [wrist]
    for f in range(5):
        for k in range(1, 5):
            ang = direction + (f - 2) * 0.25
            pts.append(wrist + 8 * k * np.array([np.cos(ang), np.sin(ang)]))
    return np.array(pts)


def _face(nose):
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return nose + np.stack([18 * np.cos(ang), 24 * np.sin(ang)], axis=1)


def _reference_person():
    return PersonPose(
        body=_with_conf(REF_BODY),
        feet=_with_conf(REF_FEET),
        left_hand=_with_conf(_hand(REF_BODY[7], np.pi / 2)),
        right_hand=_with_conf(_hand(REF_BODY[4], np.pi / 2)),
        face=_with_conf(_face(REF_BODY[0])),
    )


def _map(person, fn):
    """Apply ``fn`` to every present point of a person."""
    parts = {}
    for name, arr in person.parts().items():
        if arr is None:
            parts[name] = None
            continue
        a = arr.astype(np.float64).copy()
        m = a[:, 2] > 0
        a[m, :2] = fn(a[m, :2])
        parts[name] = a
    return PersonPose(**parts)


def _rotate_forearm(person, theta):
    """Rotate the right wrist and right hand about the right elbow (bone lengths unchanged)."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    elbow = person.body[3, :2].astype(np.float64)
    body = person.body.astype(np.float64).copy()
    body[4, :2] = (body[4, :2] - elbow) @ rot.T + elbow
    hand = person.right_hand.astype(np.float64).copy()
    hand[:, :2] = (hand[:, :2] - elbow) @ rot.T + elbow
    return person.replace(body=body, right_hand=hand)


REF = FramePose(512, 768, (_reference_person(),))
K, SHIFT = 0.5, np.array([40.0, 25.0])


def _driving(n=4):
    """A half-size, shifted copy of the reference that walks right and bends the right arm."""
    base = _map(_reference_person(), lambda xy: xy * K + SHIFT)
    frames = []
    for t in range(n):
        p = _rotate_forearm(base, 0.2 * t)
        p = _map(p, lambda xy, t=t: xy + (3.0 * t, -1.0 * t))
        frames.append(FramePose(320, 480, (p,)))
    return frames


def _assert_person_close(a, b, atol=1e-3):
    for name, arr in a.parts().items():
        other = getattr(b, name)
        assert (arr is None) == (other is None), name
        if arr is not None:
            np.testing.assert_allclose(arr, other, atol=atol, err_msg=name)


@pytest.mark.parametrize("lengths_from", ["median", "first"])
def test_scaled_shifted_copy_returns_reference(lengths_from):
    drv = _driving()
    out = retarget_poses(drv, REF, lengths_from=lengths_from)
    assert len(out) == len(drv)
    assert all((f.width, f.height) == (512, 768) for f in out)
    _assert_person_close(out[0].people[0], REF.people[0])
    # later frames: the driving motion, scaled by the body-size ratio 1 / K
    for t in range(1, len(drv)):
        for name, arr in out[t].people[0].parts().items():
            want = out[0].people[0].parts()[name][:, :2] + (
                getattr(drv[t].people[0], name)[:, :2] - getattr(drv[0].people[0], name)[:, :2]) / K
            np.testing.assert_allclose(arr[:, :2], want, atol=1e-3, err_msg=f"{name} t={t}")


def test_limb_ratios_become_the_reference():
    # driving: arms 1.5x longer, legs 0.8x, head 1.2x compared with a 0.7-scaled reference
    ref = REF.people[0]
    b = ref.body.astype(np.float64).copy()
    f = ref.feet.astype(np.float64).copy()
    neck = b[1, :2].copy()

    def grow(parent, child, k, extra=()):
        d = b[child, :2] - b[parent, :2]
        delta = d * (k - 1)
        for j in (child, *extra):
            b[j, :2] += delta

    grow(2, 3, 1.5, (4,))
    grow(3, 4, 1.5)
    grow(5, 6, 1.5, (7,))
    grow(6, 7, 1.5)
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        d_thigh = (b[knee, :2] - b[hip, :2]) * (0.8 - 1)
        b[knee, :2] += d_thigh
        b[ankle, :2] += d_thigh
        b[ankle, :2] += (b[ankle, :2] - b[knee, :2]) * (0.8 - 1)
    head = (b[[0, 14, 15, 16, 17], :2] - b[0, :2]) * 1.2
    b[[0, 14, 15, 16, 17], :2] = neck + (b[0, :2] - neck) * 1.2 + head
    f[:3, :2] += b[13, :2] - ref.body[13, :2]
    f[3:, :2] += b[10, :2] - ref.body[10, :2]
    odd = PersonPose(body=b, feet=f)
    odd = _map(odd, lambda xy: (xy - neck) * 0.7 + neck + (15, -30))
    out = retarget_poses([FramePose(512, 768, (odd,))], REF)
    got = bone_lengths(out[0].people[0])
    want = bone_lengths(ref)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(out[0].people[0].body[1, :2], ref.body[1, :2], atol=1e-3)   # neck on neck
    # directions are the driving ones
    ob = out[0].people[0].body[:, :2].astype(np.float64)
    for p, c in ((2, 3), (9, 10), (0, 14)):
        d_out = ob[c] - ob[p]
        d_in = odd.body[c, :2] - odd.body[p, :2]
        cos = d_out @ d_in / np.linalg.norm(d_out) / np.linalg.norm(d_in)
        assert cos == pytest.approx(1.0, abs=1e-6)


def test_without_per_limb_or_scale_or_position():
    drv = _driving(2)
    # per_limb only changes proportions: a uniformly scaled copy gives the same result without it
    a = retarget_poses(drv, REF)
    b = retarget_poses(drv, REF, per_limb=False)
    _assert_person_close(a[1].people[0], b[1].people[0])
    # no scale: driving bone lengths are kept
    c = retarget_poses(drv, REF, match_scale=False, per_limb=False)
    np.testing.assert_allclose(bone_lengths(c[0].people[0]), bone_lengths(drv[0].people[0]), rtol=1e-5)
    np.testing.assert_allclose(c[0].people[0].body[1, :2], REF.people[0].body[1, :2], atol=1e-3)
    # no position: the driving neck keeps its relative place on the (reference) canvas
    d = retarget_poses(drv, REF, match_position=False)
    neck = drv[0].people[0].body[1, :2] * (512 / 320, 768 / 480)
    np.testing.assert_allclose(d[0].people[0].body[1, :2], neck, atol=1e-3)
    np.testing.assert_allclose(bone_lengths(d[0].people[0]), bone_lengths(REF.people[0]), rtol=1e-4)


def test_missing_joints_frames_and_parts():
    drv = _driving(3)
    p = drv[1].people[0]
    body = p.body.copy()
    body[1] = 0          # no neck: the tree is re-rooted
    body[3] = 0          # no right elbow: the wrist hangs off the shoulder
    drv[1] = FramePose(320, 480, (p.replace(body=body, face=None, left_hand=None),))
    drv.insert(2, FramePose(320, 480, ()))
    out = retarget_poses(drv, REF)
    assert len(out) == 4 and out[2].people == ()
    q = out[1].people[0]
    assert q.body[1, 2] == 0 and q.body[3, 2] == 0 and q.face is None and q.left_hand is None
    assert (q.body[[0, 2, 4, 5], 2] > 0).all()
    # uniform copy: every ratio is 1, so even the re-rooted frame is the plain scaled motion
    want = (drv[1].people[0].body[4, :2] - drv[0].people[0].body[4, :2]) / K + out[0].people[0].body[4, :2]
    np.testing.assert_allclose(q.body[4, :2], want, atol=1e-3)
    # confidences are carried over
    assert q.body[0, 2] == pytest.approx(1.0)


def test_hand_follows_wrist_when_arm_is_rescaled():
    ref = REF.people[0]
    b = ref.body.astype(np.float64).copy()
    hand = ref.right_hand.astype(np.float64).copy()
    shift = (b[4, :2] - b[3, :2]) * 1.0       # forearm twice as long
    b[4, :2] += shift
    hand[:, :2] += shift
    drv = PersonPose(body=b, right_hand=hand)
    out = retarget_poses([FramePose(512, 768, (drv,))], REF, lengths_from="first")[0].people[0]
    # wrist is pulled back; the hand's wrist point sits on the new wrist, its size follows the
    # forearm ratio (and the global scale)
    offset = out.right_hand[0, :2] - out.body[4, :2]
    np.testing.assert_allclose(offset, 0, atol=1e-3)
    s = bone_lengths(ref)[~np.isnan(bone_lengths(drv))].sum() / np.nansum(bone_lengths(drv))
    forearm = BONES.index((3, 4))
    r = bone_lengths(ref)[forearm] / (s * bone_lengths(drv)[forearm])
    span_in = np.linalg.norm(hand[4, :2] - hand[0, :2])
    span_out = np.linalg.norm(out.right_hand[4, :2] - out.right_hand[0, :2])
    assert span_out == pytest.approx(span_in * s * r, rel=1e-4)


def test_errors_and_empty_driving():
    with pytest.raises(ValueError, match="reference"):
        retarget_poses(_driving(1), FramePose(10, 10, ()))
    with pytest.raises(ValueError, match="lengths_from"):
        retarget_poses(_driving(1), REF, lengths_from="mean")
    with pytest.raises(ValueError, match="no body keypoint"):
        retarget_poses(_driving(1), FramePose(10, 10, (PersonPose.empty(),)))
    with pytest.raises(ValueError, match="driving"):
        retarget_poses(["x"], REF)
    out = retarget_poses([FramePose(32, 32, ())] * 2, REF)
    assert [f.people for f in out] == [(), ()] and out[0].width == 512
    assert retarget_poses([], REF) == []
