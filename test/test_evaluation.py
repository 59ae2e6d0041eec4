"""Tests of the ScanNet instance-segmentation metric, on hand-worked scenes.

Scenes are built from blocks of points; each block has one GT semantic label, one GT instance
id and one predicted instance index. Worked AP values follow the official integral: with the
PR points taken at the unique scores in increasing order (precision p_m, recall r_m) plus the
artificial end point (p = 1, r = 0), AP = sum_m p_m * (r_{m-1} - r_{m+1}) / 2, where r_{-1} = r_0
and the recall after the end point is 0.
"""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest

from occuseg_ros.core.evaluation import (
    AP_IOU_THRESHOLDS,
    EvaluationResult,
    InstanceGroundTruth,
    InstancePrediction,
    evaluate_scenes,
    format_table,
)
from occuseg_ros.core.labels import BENCHMARK_INSTANCE_IDS

UNANNOTATED, WALL, CHAIR, SOFA, TABLE = 0, 1, 5, 6, 7


def scene(blocks: list[tuple[int, int, int, int]], labels: list[int], scores: list[float]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scene arrays from ``(n_points, gt_semantic, gt_instance, pred_index)`` blocks."""
    semantic = np.concatenate([np.full(n, s, np.int32) for n, s, _, _ in blocks])
    instance = np.concatenate([np.full(n, i, np.int32) for n, _, i, _ in blocks])
    pred = np.concatenate([np.full(n, p, np.int32) for n, _, _, p in blocks])
    return semantic, instance, pred, np.array(labels, np.int32), np.array(scores, np.float32)


def assert_class(result: EvaluationResult, class_id: int, ap: float, ap50: float,
                 ap25: float) -> None:
    assert result.per_class[class_id] == pytest.approx((ap, ap50, ap25), abs=1e-12)


def test_thresholds_are_the_official_nine() -> None:
    # numpy.arange(0.5, 0.95, 0.05) as in the official script stops at 0.90.
    assert AP_IOU_THRESHOLDS.size == 9
    assert AP_IOU_THRESHOLDS[0] == 0.5
    assert AP_IOU_THRESHOLDS[-1] == pytest.approx(0.9)


def test_perfect_prediction_scores_one() -> None:
    # One TP per class, no FP, no FN: PR points (p=1, r=1), (1, 0); widths 0.5, 0.5 -> AP 1.
    s = scene([(200, CHAIR, 10, 0), (150, TABLE, 20, 1), (100, UNANNOTATED, -1, -1)],
              [CHAIR, TABLE], [0.9, 0.8])
    result = evaluate_scenes([s])
    assert (result.ap, result.ap50, result.ap25) == (1.0, 1.0, 1.0)
    assert_class(result, CHAIR, 1.0, 1.0, 1.0)
    assert_class(result, TABLE, 1.0, 1.0, 1.0)
    assert list(result.per_class) == list(BENCHMARK_INSTANCE_IDS)
    assert all(math.isnan(v) for v in result.per_class[3])  # cabinet: no GT


def test_iou_0_6_matches_at_two_of_nine_thresholds() -> None:
    # GT 300 points, prediction = 180 of them: IoU 180 / 300 = 0.6. A match needs IoU > t:
    # true for t = 0.50, 0.55 and 0.25, false from t = 0.6 on. At a matching threshold AP = 1;
    # otherwise the prediction is an FP and the GT a hard FN: only PR point (0, 0) -> AP 0.
    # AP = 2 / 9 over the nine thresholds 0.50..0.90, AP50 = AP25 = 1.
    s = scene([(180, CHAIR, 1, 0), (120, CHAIR, 1, -1)], [CHAIR], [0.7])
    result = evaluate_scenes([s])
    assert_class(result, CHAIR, 2 / 9, 1.0, 1.0)
    assert (result.ap, result.ap50, result.ap25) == pytest.approx((2 / 9, 1.0, 1.0))


def test_iou_exactly_0_5_is_no_match_at_0_5() -> None:
    # IoU 150 / 300 = 0.5 is not > 0.5: AP50 = 0 (FP + hard FN) while AP25 = 1.
    s = scene([(150, CHAIR, 1, 0), (150, CHAIR, 1, -1)], [CHAIR], [0.7])
    assert_class(evaluate_scenes([s]), CHAIR, 0.0, 0.0, 1.0)


def test_false_positive_scored_above_the_true_positive() -> None:
    # Chair: TP (score 0.5) and an FP lying on a table GT (score 0.9; table points are neither
    # void nor a chair GT, so nothing of it is ignored). Increasing scores:
    #   t=0.5: tp=1 fp=1 fn=0 -> p=0.5 r=1;  t=0.9: tp=0 fp=1 fn=1 -> p=0 r=0;  end: p=1 r=0.
    #   widths (r_-1 - r_1)/2 = (1-0)/2, (r_0 - r_2)/2 = (1-0)/2, (r_1 - 0)/2 = 0
    #   AP = 0.5*0.5 + 0*0.5 + 1*0 = 0.25 at every threshold (IoU 1).
    # Table has GT but no table prediction -> 0, so the class mean is 0.125.
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [CHAIR, CHAIR], [0.5, 0.9])
    result = evaluate_scenes([s])
    assert_class(result, CHAIR, 0.25, 0.25, 0.25)
    assert_class(result, TABLE, 0.0, 0.0, 0.0)
    assert (result.ap, result.ap50, result.ap25) == pytest.approx((0.125, 0.125, 0.125))


def test_false_positive_scored_below_the_true_positive_costs_nothing() -> None:
    # Same scene with swapped scores. t=0.5: p=0.5 r=1; t=0.9: p=1 r=1; end: p=1 r=0.
    # widths (1-1)/2 = 0, (1-0)/2 = 0.5, (1-0)/2 = 0.5 -> AP = 0 + 0.5 + 0.5 = 1.
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [CHAIR, CHAIR], [0.9, 0.5])
    assert_class(evaluate_scenes([s]), CHAIR, 1.0, 1.0, 1.0)


def test_tied_scores_give_one_pr_point() -> None:
    # Two TPs and one FP, all scored 0.7: one PR point p=2/3 r=1, then the end point.
    # widths 0.5, 0.5 -> AP = 2/3 * 0.5 + 1 * 0.5 = 5/6.
    s = scene([(200, CHAIR, 1, 0), (200, CHAIR, 2, 1), (200, TABLE, 3, 2)],
              [CHAIR, CHAIR, CHAIR], [0.7, 0.7, 0.7])
    assert_class(evaluate_scenes([s]), CHAIR, 5 / 6, 5 / 6, 5 / 6)


def test_duplicate_prediction_of_one_gt() -> None:
    # GT chair of 400 points split between P0 (240 points, IoU 0.6, score 0.6) and
    # P1 (160 points, IoU 0.4, score 0.8).
    # t = 0.50, 0.55: P0 is the TP (0.6); P1 has no IoU > t and nothing ignored -> FP (0.8).
    #   FP above TP -> AP 0.25 (as in test_false_positive_scored_above_the_true_positive).
    # t = 0.60..0.90 (7 thresholds): nothing matches: two FPs, one hard FN -> AP 0.
    # t = 0.25: both match the GT. P0 comes first and matches; P1 is a second match: an FP with
    #   the lower score min(0.6, 0.8) = 0.6 while the GT keeps the higher 0.8 as its TP score.
    #   FP below TP -> AP 1.
    # AP = (0.25 * 2 + 0 * 7) / 9 = 1/18, AP50 = 0.25, AP25 = 1.
    s = scene([(240, CHAIR, 1, 0), (160, CHAIR, 1, 1)], [CHAIR, CHAIR], [0.6, 0.8])
    assert_class(evaluate_scenes([s]), CHAIR, 1 / 18, 0.25, 1.0)


def test_missed_gt_caps_recall() -> None:
    # Two chairs, only A predicted: t=0.9: tp=1 fp=0 fn=1 -> p=1 r=0.5; end p=1 r=0.
    # widths (0.5-0)/2, (0.5-0)/2 -> AP = 0.25 + 0.25 = 0.5.
    s = scene([(200, CHAIR, 1, 0), (200, CHAIR, 2, -1)], [CHAIR], [0.9])
    assert_class(evaluate_scenes([s]), CHAIR, 0.5, 0.5, 0.5)


def test_gt_under_min_region_size_is_not_a_false_negative() -> None:
    # Chair B has 99 points (< 100): ignored, so predicting only A is perfect. With
    # min_region_size=99, B counts and becomes a hard FN -> 0.5 as in test_missed_gt_caps_recall.
    s = scene([(200, CHAIR, 1, 0), (99, CHAIR, 2, -1)], [CHAIR], [0.9])
    assert_class(evaluate_scenes([s]), CHAIR, 1.0, 1.0, 1.0)
    assert_class(evaluate_scenes([s], min_region_size=99), CHAIR, 0.5, 0.5, 0.5)


def test_prediction_under_min_region_size_is_skipped() -> None:
    # P1 (99 points on a table GT, score 0.9) would be an FP above the TP; it is dropped.
    s = scene([(200, CHAIR, 1, 0), (99, TABLE, 2, 1), (101, TABLE, 2, -1)],
              [CHAIR, CHAIR], [0.5, 0.9])
    assert_class(evaluate_scenes([s]), CHAIR, 1.0, 1.0, 1.0)


def test_prediction_on_a_small_gt_is_not_a_false_positive() -> None:
    # P1 (score 0.9) = 60 points of the 99-point chair B + 40 unannotated points.
    # IoU with B = 60 / (99 + 100 - 60) = 0.43: no match at t >= 0.5, so the ignore test
    # decides: ignored = 40 void + 60 on a small GT = 100 points, proportion 1.0 > t -> not an
    # FP. (Without the small-GT rule it would be 0.4 <= t, an FP above the TP.) At t = 0.25 the
    # IoU 0.43 > 0.25 counts as "found a GT", so again no FP. Only A's TP remains -> AP 1.
    s = scene([(200, CHAIR, 1, 0), (60, CHAIR, 2, 1), (39, CHAIR, 2, -1),
               (40, UNANNOTATED, -1, 1)], [CHAIR, CHAIR], [0.5, 0.9])
    assert_class(evaluate_scenes([s]), CHAIR, 1.0, 1.0, 1.0)


def test_prediction_mostly_on_void_points_is_not_a_false_positive() -> None:
    # Void points: unannotated, a wall instance (wall is not a benchmark class) and chair-
    # labelled points with no instance id.
    # P1 (score 0.9): 45 unannotated + 40 wall + 10 instance-less + 5 table-GT points = 100;
    #   ignored proportion 0.95 > every t -> never an FP.
    # P2 (score 0.8): 50 unannotated + 50 table-GT points; ignored proportion 0.5 <= t for
    #   t = 0.50..0.90 -> FP there (equality counts as FP); at t = 0.25, 0.5 > 0.25 -> not an FP.
    # Chair: t >= 0.5: TP 0.5 below FP 0.8 -> 0.25; t = 0.25: TP alone -> 1.
    s = scene([(200, CHAIR, 1, 0),
               (45, UNANNOTATED, -1, 1), (40, WALL, 7, 1), (10, CHAIR, -1, 1), (5, TABLE, 2, 1),
               (50, UNANNOTATED, -1, 2), (50, TABLE, 2, 2), (145, TABLE, 2, -1)],
              [CHAIR, CHAIR, CHAIR], [0.5, 0.9, 0.8])
    assert_class(evaluate_scenes([s]), CHAIR, 0.25, 0.25, 1.0)


def test_prediction_of_the_wrong_class() -> None:
    # P0 covers chair A exactly but says "table" (score 0.9); P1 covers table T (score 0.5).
    # Chair: GT but no chair prediction -> 0. Table: TP 0.5 and FP 0.9 (chair points are not
    # void) -> 0.25 as in test_false_positive_scored_above_the_true_positive. Mean 0.125.
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [TABLE, TABLE], [0.9, 0.5])
    result = evaluate_scenes([s])
    assert_class(result, CHAIR, 0.0, 0.0, 0.0)
    assert_class(result, TABLE, 0.25, 0.25, 0.25)
    assert (result.ap, result.ap50, result.ap25) == pytest.approx((0.125, 0.125, 0.125))


def test_classes_without_gt_are_nan_and_left_out_of_the_mean() -> None:
    # A sofa prediction with no sofa GT anywhere: sofa is nan, not 0, and the mean is the
    # chair's 1.0 alone.
    s = scene([(200, CHAIR, 1, 0), (150, UNANNOTATED, -1, 1)], [CHAIR, SOFA], [0.9, 0.95])
    result = evaluate_scenes([s])
    assert all(math.isnan(v) for v in result.per_class[SOFA])
    assert (result.ap, result.ap50, result.ap25) == (1.0, 1.0, 1.0)


def test_no_gt_at_all_gives_nan() -> None:
    s = scene([(150, UNANNOTATED, -1, 0)], [CHAIR], [0.9])
    result = evaluate_scenes([s])
    assert math.isnan(result.ap) and math.isnan(result.ap50) and math.isnan(result.ap25)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["ap"] is None and data["per_class"][str(CHAIR)]["ap50"] is None
    assert format_table(result).splitlines()[-1] == "AP nan AP50 nan AP25 nan"


def test_gt_label_is_the_majority_label_of_the_instance() -> None:
    # Instance 4 has 150 chair + 60 table points: a 210-point chair. A chair prediction on all
    # 210 points is a perfect match; there is no table GT.
    s = scene([(150, CHAIR, 4, 0), (60, TABLE, 4, 0)], [CHAIR], [0.9])
    result = evaluate_scenes([s])
    assert_class(result, CHAIR, 1.0, 1.0, 1.0)
    assert all(math.isnan(v) for v in result.per_class[TABLE])


def test_two_scenes_pool_detections_and_false_negatives() -> None:
    # Scene 1: chair A predicted exactly (TP, score 0.9). Scene 2: chair B (400 points) missed;
    # a chair prediction (score 0.95) covers 100 of B's points: IoU 0.25, no match at any t
    # (0.25 is not > 0.25), nothing ignored -> FP; B is a hard FN. Prediction index 0 in both
    # scenes must not interfere. Pooled: TP 0.9, FP 0.95, 1 hard FN.
    #   t=0.9: tp=1 fp=1 fn=1 -> p=0.5 r=0.5;  t=0.95: tp=0 fp=1 fn=2 -> p=0 r=0;  end p=1 r=0.
    #   widths (0.5-0)/2, (0.5-0)/2, 0 -> AP = 0.5*0.25 + 0 = 0.125.
    # Separately the scenes would give 1 and 0.
    s1 = scene([(200, CHAIR, 1, 0)], [CHAIR], [0.9])
    s2 = scene([(100, CHAIR, 1, 0), (300, CHAIR, 1, -1)], [CHAIR], [0.95])
    assert_class(evaluate_scenes([s1, s2]), CHAIR, 0.125, 0.125, 0.125)
    assert_class(evaluate_scenes([s1]), CHAIR, 1.0, 1.0, 1.0)
    assert_class(evaluate_scenes([s2]), CHAIR, 0.0, 0.0, 0.0)


def test_dataclass_scene_input_matches_array_input() -> None:
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [CHAIR, CHAIR], [0.5, 0.9])
    pair = (InstanceGroundTruth(s[0], s[1]), InstancePrediction(s[2], s[3], s[4]))
    assert evaluate_scenes([pair]).to_dict() == evaluate_scenes([s]).to_dict()


def test_class_ids_restrict_the_evaluation() -> None:
    # With only chair evaluated, the table GT under the FP is void: the FP is ignored.
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [CHAIR, CHAIR], [0.5, 0.9])
    result = evaluate_scenes([s], class_ids=(CHAIR,))
    assert list(result.per_class) == [CHAIR]
    assert_class(result, CHAIR, 1.0, 1.0, 1.0)


def _valid() -> list[np.ndarray]:
    return list(scene([(200, CHAIR, 1, 0)], [CHAIR], [0.9]))


def _with(index: int, value: object) -> tuple:
    arrays: list[object] = list(_valid())
    arrays[index] = value
    return tuple(arrays)


@pytest.mark.parametrize(("scene_input", "message"), [
    (_with(1, np.zeros(199, np.int32)), "gt semantic has 200 points"),
    (_with(2, np.zeros(199, np.int32)), "ground truth has 200 points"),
    (_with(0, np.zeros(200, np.float32)), "gt semantic must hold integers"),
    (_with(2, np.zeros(200, np.float64)), "pred instance must hold integers"),
    (_with(1, np.zeros((200, 1), np.int32)), "gt instance must be 1-D"),
    (_with(1, np.full(200, -2, np.int32)), "gt instance ids must be >= -1"),
    (_with(0, np.full(200, -1, np.int32)), "gt semantic labels must be >= 0"),
    (_with(2, np.full(200, 1, np.int32)), r"pred instance indices must lie in \[-1, 0\]"),
    (_with(4, np.array([0.9, 0.8])), "pred labels has 1 entries but pred scores has 2"),
    (_with(4, np.array([np.nan])), "pred scores must be finite"),
    (_with(4, np.array(["high"])), "pred scores must be real numbers"),
    (_with(3, np.array([5.0])), "pred labels must hold integers"),
    (tuple(_valid()[:4]), "expected \\(gt_semantic"),
])
def test_invalid_scene_inputs_raise(scene_input: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_scenes([scene_input])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"class_ids": ()}, "class_ids must be a non-empty"),
    ({"class_ids": (5, 5)}, "must not repeat"),
    ({"class_ids": (5.0,)}, "class_ids must be a non-empty sequence of integers"),
    ({"min_region_size": 0}, "min_region_size must be an integer >= 1"),
])
def test_invalid_options_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_scenes([tuple(_valid())], **kwargs)


def test_format_table_lists_classes_and_ends_with_the_summary() -> None:
    s = scene([(200, CHAIR, 1, 0), (200, TABLE, 2, 1)], [CHAIR, CHAIR], [0.5, 0.9])
    lines = format_table(evaluate_scenes([s])).splitlines()
    assert lines[-1] == "AP 0.125 AP50 0.125 AP25 0.125"
    assert sum(line.startswith("AP ") for line in lines) == 1
    rows = lines[1:1 + len(BENCHMARK_INSTANCE_IDS)]
    assert re.fullmatch(r"chair +0\.250 +0\.250 +0\.250", rows[BENCHMARK_INSTANCE_IDS.index(CHAIR)])
    assert re.fullmatch(r"table +0\.000 +0\.000 +0\.000", rows[BENCHMARK_INSTANCE_IDS.index(TABLE)])
    assert re.fullmatch(r"shower curtain +nan +nan +nan", rows[BENCHMARK_INSTANCE_IDS.index(28)])


def test_to_dict_is_json_ready() -> None:
    s = scene([(200, CHAIR, 1, 0)], [CHAIR], [0.9])
    data = json.loads(json.dumps(evaluate_scenes([s]).to_dict(), allow_nan=False))
    assert data["ap"] == 1.0 and data["ap50"] == 1.0 and data["ap25"] == 1.0
    assert data["per_class"]["5"] == {"name": "chair", "ap": 1.0, "ap50": 1.0, "ap25": 1.0}
    assert data["per_class"]["3"]["ap"] is None


def test_large_scene_evaluates_well_under_a_second() -> None:
    # 80k points, 70 GT instances, 100 predictions (GT instances with noise and split-offs).
    rng = np.random.default_rng(0)
    n = 80_000
    gt_instance = rng.integers(-1, 70, n).astype(np.int32)
    gt_class = rng.choice(np.array(BENCHMARK_INSTANCE_IDS + (1, 2)), 70)
    semantic = np.where(gt_instance >= 0, gt_class[gt_instance], 0).astype(np.int32)
    pred = gt_instance.copy()
    noisy = rng.random(n) < 0.3
    pred[noisy] = rng.integers(-1, 100, noisy.sum())
    labels = np.concatenate([gt_class, rng.choice(np.array(BENCHMARK_INSTANCE_IDS), 30)])
    scores = rng.random(100)
    start = time.perf_counter()
    result = evaluate_scenes([(semantic, gt_instance, pred, labels, scores)])
    assert time.perf_counter() - start < 1.0
    assert 0.0 <= result.ap <= result.ap50 <= result.ap25 <= 1.0


def test_real_scene_ground_truth_as_prediction_is_perfect(scannet_scene_path) -> None:
    with np.load(scannet_scene_path) as data:
        semantic, instance = data["semantic"], data["instance"]
    ids = np.unique(instance[instance >= 0])
    pred = np.where(instance >= 0, np.searchsorted(ids, instance), -1)
    labels = np.array([np.bincount(semantic[instance == i]).argmax() for i in ids])
    scores = np.linspace(0.1, 1.0, ids.size)
    start = time.perf_counter()
    result = evaluate_scenes([(semantic, instance, pred, labels, scores)])
    assert time.perf_counter() - start < 1.0
    assert (result.ap, result.ap50, result.ap25) == (1.0, 1.0, 1.0)
    scored = [c for c, v in result.per_class.items() if not math.isnan(v[0])]
    large = {int(np.bincount(semantic[instance == i]).argmax()) for i in ids
             if (instance == i).sum() >= 100} & set(BENCHMARK_INSTANCE_IDS)
    assert set(scored) == large
