"""ScanNet v2 instance-segmentation benchmark metric: AP, AP50 and AP25 over nyu40 classes.

This reimplements the logic of ScanNet's ``BenchmarkScripts/3d_evaluation/
evaluate_semantic_instance.py`` (latest revision) on per-point arrays, so numbers are comparable
with the benchmark:

* IoU thresholds are ``numpy.arange(0.5, 0.95, 0.05)`` exactly as the official script builds
  them, which yields the nine values 0.50, 0.55, ..., 0.90 (0.95 falls outside ``arange``).
  AP is the mean over those nine; AP50 and AP25 use the thresholds 0.5 and 0.25. A match
  needs ``IoU > threshold`` (strict).
* A ground-truth (GT) instance is one GT instance id; its class is the majority semantic label
  of its points, and it is a GT instance only if that class is in ``class_ids``. GT instances
  with fewer than ``min_region_size`` points are ignored: never false negatives, and the part
  of a prediction lying on them is "ignore" when deciding false positives.
* Points that belong to no GT instance of an evaluated class (unannotated points, points of
  classes outside ``class_ids`` such as walls and floors, and points with instance -1) are
  "void": the part of a prediction lying on them is "ignore" as well. An unmatched prediction
  is a false positive only if its ignored fraction is ``<= threshold``.
* Predictions with fewer than ``min_region_size`` points, or with a label outside
  ``class_ids``, are dropped.
* Matching is per class with the official greedy loop: GT instances in increasing GT-id order,
  each trying the not-yet-used predictions of its class in prediction order; a second
  prediction above the threshold for an already-matched GT adds a false positive carrying the
  lower of the two scores while the GT keeps the higher score (and that second prediction stays
  available to later GT instances). GT instances left unmatched are "hard" false negatives.
* True/false positives with their scores and the hard false negatives are pooled per class over
  all scenes; the precision/recall curve is taken at the unique scores and integrated with the
  official recall-step weights. A class with GT but no prediction scores 0; a class with no GT
  in any scene is nan and left out of the class mean.

Where the official script would fail (a class whose predictions are all ignored and whose GT
is all missed gives an empty score list), this returns 0 for that class and threshold.

Predictions are per-point instance indices, so predicted masks cannot overlap (the official
file format would allow it; segmentation by clustering never produces overlaps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from occuseg_ros.core.labels import BENCHMARK_INSTANCE_IDS, label_name

#: IoU thresholds averaged into AP, built exactly as the official script builds them
#: (``arange`` stops at 0.90; the values keep its floating-point rounding).
AP_IOU_THRESHOLDS: np.ndarray = np.arange(0.5, 0.95, 0.05)

#: IoU threshold of AP25.
AP25_IOU_THRESHOLD: float = 0.25

#: Minimum number of points of a GT instance or predicted mask to take part (official: 100).
DEFAULT_MIN_REGION_SIZE: int = 100


def _as_int_vector(value: Any, name: str) -> np.ndarray:
    """``value`` as a 1-D int64 array; ValueError unless it is a 1-D integer array."""
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


@dataclass
class InstanceGroundTruth:
    """Ground truth of one scene, per point.

    Attributes:
        semantic: (N,) int nyu40 label of every point, 0 = unannotated.
        instance: (N,) int GT instance id of every point (arbitrary ids), -1 = no instance.
    """

    semantic: np.ndarray
    instance: np.ndarray

    def __post_init__(self) -> None:
        self.semantic = _as_int_vector(self.semantic, "gt semantic")
        self.instance = _as_int_vector(self.instance, "gt instance")
        if self.semantic.shape != self.instance.shape:
            raise ValueError(
                f"gt semantic has {self.semantic.size} points but gt instance has "
                f"{self.instance.size}")
        if self.semantic.size and self.semantic.min() < 0:
            raise ValueError("gt semantic labels must be >= 0")
        if self.instance.size and self.instance.min() < -1:
            raise ValueError("gt instance ids must be >= -1 (-1 = no instance)")


@dataclass
class InstancePrediction:
    """Predicted instances of one scene.

    Attributes:
        instance: (N,) int instance index of every point into ``labels``/``scores``,
            -1 = no instance.
        labels: (I,) int nyu40 class of each predicted instance.
        scores: (I,) float confidence of each predicted instance (finite).
    """

    instance: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.instance = _as_int_vector(self.instance, "pred instance")
        self.labels = _as_int_vector(self.labels, "pred labels")
        scores = np.asarray(self.scores)
        if scores.ndim != 1:
            raise ValueError(f"pred scores must be 1-D, got shape {scores.shape}")
        if scores.size and scores.dtype.kind not in "iuf":
            raise ValueError(f"pred scores must be real numbers, got dtype {scores.dtype}")
        self.scores = scores.astype(np.float64)
        if self.scores.size != self.labels.size:
            raise ValueError(
                f"pred labels has {self.labels.size} entries but pred scores has "
                f"{self.scores.size}")
        if not np.all(np.isfinite(self.scores)):
            raise ValueError("pred scores must be finite")
        if self.instance.size and (self.instance.min() < -1
                                   or self.instance.max() >= self.labels.size):
            raise ValueError(
                f"pred instance indices must lie in [-1, {self.labels.size - 1}] "
                f"({self.labels.size} predicted instances)")


#: One scene: ``(gt_semantic, gt_instance, pred_instance, pred_labels, pred_scores)`` arrays,
#: or an ``(InstanceGroundTruth, InstancePrediction)`` pair.
SceneInput = tuple[Any, Any, Any, Any, Any] | tuple[InstanceGroundTruth, InstancePrediction]


@dataclass(frozen=True)
class EvaluationResult:
    """Benchmark scores as fractions in [0, 1].

    Attributes:
        ap: mean over classes of the AP averaged over ``AP_IOU_THRESHOLDS`` (nan if no class
            has GT).
        ap50: mean over classes of the AP at IoU 0.5.
        ap25: mean over classes of the AP at IoU 0.25.
        per_class: ``class id -> (ap, ap50, ap25)`` for every evaluated class, in
            ``class_ids`` order; nan for classes without GT.
    """

    ap: float
    ap50: float
    ap25: float
    per_class: dict[int, tuple[float, float, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: nan becomes None, per-class entries keyed by the class id string."""
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "ap": clean(self.ap),
            "ap50": clean(self.ap50),
            "ap25": clean(self.ap25),
            "per_class": {
                str(class_id): {"name": label_name(class_id), "ap": clean(ap),
                                "ap50": clean(ap50), "ap25": clean(ap25)}
                for class_id, (ap, ap50, ap25) in self.per_class.items()
            },
        }


@dataclass(frozen=True)
class _ClassOverlaps:
    """Threshold-independent overlap data of one class in one scene.

    GT instances are in increasing GT-id order, predictions in prediction-index order.
    """

    gt_small: np.ndarray      # (G,) bool: GT instance under min_region_size (ignored)
    pred_scores: np.ndarray   # (P,) float
    pred_ignore: np.ndarray   # (P,) float: points on void or on small GT instances of the class
    pred_sizes: np.ndarray    # (P,) float
    iou: np.ndarray           # (P, G) float


def _majority_labels(gt_index: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """Majority semantic label of each GT instance ``0..G-1`` (ties: smallest label)."""
    if gt_index.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((semantic, gt_index))
    inst_sorted, label_sorted = gt_index[order], semantic[order]
    run_start = np.flatnonzero(np.concatenate((
        [True], (np.diff(inst_sorted) != 0) | (np.diff(label_sorted) != 0))))
    run_count = np.diff(np.append(run_start, order.size))
    run_inst, run_label = inst_sorted[run_start], label_sorted[run_start]
    best = np.lexsort((run_label, -run_count, run_inst))
    first_of_instance = np.concatenate(([True], np.diff(run_inst[best]) != 0))
    return run_label[best][first_of_instance]


def _scene_overlaps(gt: InstanceGroundTruth, pred: InstancePrediction,
                    class_ids: np.ndarray, min_region_size: int) -> dict[int, _ClassOverlaps]:
    """Per-class overlap data of one scene (classes with neither GT nor prediction omitted)."""
    if gt.instance.size != pred.instance.size:
        raise ValueError(
            f"ground truth has {gt.instance.size} points but the prediction has "
            f"{pred.instance.size}")
    has_gt = gt.instance >= 0
    _, gt_inverse = np.unique(gt.instance[has_gt], return_inverse=True)
    gt_index = np.full(gt.instance.size, -1, dtype=np.int64)
    gt_index[has_gt] = gt_inverse
    gt_labels = _majority_labels(gt_inverse, gt.semantic[has_gt])
    gt_sizes = np.bincount(gt_inverse, minlength=gt_labels.size)
    gt_evaluated = np.isin(gt_labels, class_ids)
    void = ~has_gt
    void[has_gt] = ~gt_evaluated[gt_inverse]

    n_pred = pred.labels.size
    has_pred = pred.instance >= 0
    pred_sizes = np.bincount(pred.instance[has_pred], minlength=n_pred)
    pred_void = np.bincount(pred.instance[has_pred & void], minlength=n_pred)
    pred_kept = (pred_sizes >= min_region_size) & np.isin(pred.labels, class_ids)

    both = has_pred & has_gt
    stride = max(gt_labels.size, 1)
    pair_keys, pair_counts = np.unique(
        pred.instance[both] * stride + gt_index[both], return_counts=True)
    pair_pred, pair_gt = np.divmod(pair_keys, stride)
    same_class = pred.labels[pair_pred] == gt_labels[pair_gt]
    pair_pred, pair_gt, pair_counts = (
        pair_pred[same_class], pair_gt[same_class], pair_counts[same_class])

    # Row of each kept prediction of the current class (-1 otherwise, reset after each class);
    # the pairs are same-class, so a pair whose prediction has a row has a GT of the class too.
    row_of_pred = np.full(n_pred, -1, dtype=np.int64)
    col_of_gt = np.full(gt_labels.size, -1, dtype=np.int64)
    overlaps: dict[int, _ClassOverlaps] = {}
    for class_id in class_ids.tolist():
        gt_sel = np.flatnonzero(gt_labels == class_id)
        pred_sel = np.flatnonzero(pred_kept & (pred.labels == class_id))
        if gt_sel.size == 0 and pred_sel.size == 0:
            continue
        row_of_pred[pred_sel] = np.arange(pred_sel.size)
        col_of_gt[gt_sel] = np.arange(gt_sel.size)
        in_class = row_of_pred[pair_pred] >= 0
        intersection = np.zeros((pred_sel.size, gt_sel.size))
        intersection[row_of_pred[pair_pred[in_class]],
                     col_of_gt[pair_gt[in_class]]] = pair_counts[in_class]
        row_of_pred[pred_sel] = -1

        sizes_p = pred_sizes[pred_sel].astype(np.float64)
        sizes_g = gt_sizes[gt_sel].astype(np.float64)
        small = sizes_g < min_region_size
        overlaps[class_id] = _ClassOverlaps(
            gt_small=small,
            pred_scores=pred.scores[pred_sel],
            pred_ignore=pred_void[pred_sel] + intersection[:, small].sum(axis=1),
            pred_sizes=sizes_p,
            iou=intersection / (sizes_p[:, None] + sizes_g[None, :] - intersection),
        )
    return overlaps


def _match(overlaps: _ClassOverlaps, threshold: float) -> tuple[list[float], list[float], int]:
    """Official greedy matching of one class in one scene at one IoU threshold.

    Returns the scores of the true positives, the scores of the false positives and the number
    of hard false negatives.
    """
    above = overlaps.iou > threshold
    used = np.zeros(above.shape[0], dtype=bool)
    tp_scores: list[float] = []
    fp_scores: list[float] = []
    hard_fn = 0
    for gt in np.flatnonzero(~overlaps.gt_small):
        score: float | None = None
        for p in np.flatnonzero(above[:, gt]):
            if used[p]:
                continue
            candidate = float(overlaps.pred_scores[p])
            if score is None:
                score = candidate
                used[p] = True
            else:
                fp_scores.append(min(score, candidate))
                score = max(score, candidate)
        if score is None:
            hard_fn += 1
        else:
            tp_scores.append(score)
    unmatched = ~above.any(axis=1)
    false_pos = unmatched & (overlaps.pred_ignore / overlaps.pred_sizes <= threshold)
    fp_scores.extend(overlaps.pred_scores[false_pos].tolist())
    return tp_scores, fp_scores, hard_fn


def _average_precision(tp_scores: list[float], fp_scores: list[float], hard_fn: int) -> float:
    """AP of pooled detections: PR curve at the unique scores, official recall-step integral."""
    scores = np.array(tp_scores + fp_scores, dtype=np.float64)
    if scores.size == 0:
        return 0.0
    is_true = np.concatenate((np.ones(len(tp_scores)), np.zeros(len(fp_scores))))
    order = np.argsort(scores, kind="stable")
    scores, is_true = scores[order], is_true[order]
    _, first = np.unique(scores, return_index=True)
    true_below = np.concatenate(([0.0], np.cumsum(is_true)))[first]
    tp = is_true.sum() - true_below
    fp = (scores.size - first) - tp
    fn = true_below + hard_fn
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate(([recall[0]], recall, [0.0]))
    step_widths = np.convolve(padded, [-0.5, 0.0, 0.5], "valid")
    return float(np.dot(precision, step_widths))


def _as_scene(scene: SceneInput, index: int) -> tuple[InstanceGroundTruth, InstancePrediction]:
    """Validated GT and prediction of one scene input."""
    if isinstance(scene, tuple | list) and len(scene) == 2 and isinstance(
            scene[0], InstanceGroundTruth) and isinstance(scene[1], InstancePrediction):
        return scene[0], scene[1]
    if not isinstance(scene, tuple | list) or len(scene) != 5:
        raise ValueError(
            f"scene {index}: expected (gt_semantic, gt_instance, pred_instance, pred_labels, "
            f"pred_scores) or (InstanceGroundTruth, InstancePrediction)")
    try:
        return (InstanceGroundTruth(scene[0], scene[1]),
                InstancePrediction(scene[2], scene[3], scene[4]))
    except ValueError as error:
        raise ValueError(f"scene {index}: {error}") from error


def _mean_over_classes(values: np.ndarray) -> float:
    """Mean of the non-nan entries, nan if there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def evaluate_scenes(scenes: Sequence[SceneInput],
                    class_ids: Iterable[int] = BENCHMARK_INSTANCE_IDS,
                    min_region_size: int = DEFAULT_MIN_REGION_SIZE) -> EvaluationResult:
    """ScanNet v2 instance-segmentation AP, AP50 and AP25 pooled over ``scenes``.

    Args:
        scenes: one entry per scene, either ``(gt_semantic, gt_instance, pred_instance,
            pred_labels, pred_scores)`` (see ``InstanceGroundTruth`` and
            ``InstancePrediction`` for the arrays) or an ``(InstanceGroundTruth,
            InstancePrediction)`` pair.
        class_ids: nyu40 ids of the evaluated classes (default: the 18 benchmark classes).
        min_region_size: GT instances and predicted masks with fewer points are ignored.

    Returns:
        The scores; see the module docstring for the exact rules.

    Raises:
        ValueError: on malformed inputs (shapes, dtypes, lengths, index ranges, class ids).
    """
    class_array = np.array(list(class_ids))
    if class_array.ndim != 1 or class_array.size == 0 or class_array.dtype.kind not in "iu":
        raise ValueError("class_ids must be a non-empty sequence of integers")
    if np.unique(class_array).size != class_array.size:
        raise ValueError("class_ids must not repeat")
    if isinstance(min_region_size, bool) or not isinstance(min_region_size, int | np.integer) \
            or min_region_size < 1:
        raise ValueError(f"min_region_size must be an integer >= 1, got {min_region_size!r}")

    per_scene = []
    for index, scene in enumerate(scenes):
        gt, pred = _as_scene(scene, index)
        try:
            per_scene.append(_scene_overlaps(gt, pred, class_array, int(min_region_size)))
        except ValueError as error:
            raise ValueError(f"scene {index}: {error}") from error

    thresholds = np.append(AP_IOU_THRESHOLDS, AP25_IOU_THRESHOLD)
    ap_table = np.full((class_array.size, thresholds.size), math.nan)
    for row, class_id in enumerate(class_array.tolist()):
        entries = [scene[class_id] for scene in per_scene if class_id in scene]
        if not any((~entry.gt_small).any() for entry in entries):
            continue
        if not any(entry.pred_scores.size for entry in entries):
            ap_table[row] = 0.0
            continue
        for column, threshold in enumerate(thresholds):
            tp_scores: list[float] = []
            fp_scores: list[float] = []
            hard_fn = 0
            for entry in entries:
                tp, fp, fn = _match(entry, float(threshold))
                tp_scores += tp
                fp_scores += fp
                hard_fn += fn
            ap_table[row, column] = _average_precision(tp_scores, fp_scores, hard_fn)

    class_ap = ap_table[:, :-1].mean(axis=1)
    class_ap50 = ap_table[:, 0]
    class_ap25 = ap_table[:, -1]
    return EvaluationResult(
        ap=_mean_over_classes(class_ap),
        ap50=_mean_over_classes(class_ap50),
        ap25=_mean_over_classes(class_ap25),
        per_class={class_id: (float(class_ap[row]), float(class_ap50[row]),
                              float(class_ap25[row]))
                   for row, class_id in enumerate(class_array.tolist())},
    )


def format_table(result: EvaluationResult) -> str:
    """Per-class text table (fractions, 3 decimals) ending in ``AP a AP50 b AP25 c``."""
    width = max([len("class")] + [len(label_name(c)) for c in result.per_class])
    lines = [f"{'class':<{width}}  {'AP':>6} {'AP50':>6} {'AP25':>6}"]
    for class_id, (ap, ap50, ap25) in result.per_class.items():
        lines.append(f"{label_name(class_id):<{width}}  {ap:>6.3f} {ap50:>6.3f} {ap25:>6.3f}")
    lines.append("-" * len(lines[0]))
    lines.append(f"AP {result.ap:.3f} AP50 {result.ap50:.3f} AP25 {result.ap25:.3f}")
    return "\n".join(lines)
