"""The ``occuseg`` command: segment, evaluate, bench and generate scenes without ROS."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .core.labels import label_name
from .core.scene import PredictionFile, Scene, SceneError, load_scene, save_scene

if TYPE_CHECKING:
    from .core.pipeline import PipelineConfig, Predictor

LOG = logging.getLogger("occuseg")

#: Where ``--predictions`` takes the per-voxel outputs from (see :func:`_predictor_factory`).
PREDICTION_SOURCES = ("network", "oracle", "oracle-semantics", "oracle-instances")


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="instance-segment a scene (.npz or .ply) or a bag",
                       description="Segment SCENE and write per-point labels to --out. A "
                                   "rosbag2 directory is replayed offline through the RGB-D "
                                   "reconstructor (or its surface increments) first, and "
                                   "--out gets the labelled map in the scene format.")
    p.add_argument("scene", type=Path, help="scene .npz (xyz, rgb[, semantic, instance]), .ply, "
                                            "or a rosbag2 directory")
    p.add_argument("--out", type=Path, required=True, help="prediction .npz to write")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint (default: the shipped model in models/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_predictions(p)
    p.add_argument("--oracle-noise", type=float, default=0.0, metavar="SIGMA",
                   help="oracle noise scale in metres on the offsets (other outputs scale "
                        "with it; see occuseg_ros.core.predictions)")
    p.add_argument("--no-occupancy", action="store_true",
                   help="r = 1 in eq. (14) and no r filter (Table 6, 'w/o occupancy')")
    p.add_argument("--seed", type=int, default=0, help="seed of the oracle's noise")
    _add_params_file(p)


def _add_predictions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", choices=PREDICTION_SOURCES, default="network",
                   help="per-voxel outputs from the network; ideal ones from the scene's ground "
                        "truth ('oracle', the clustering's upper bound); or one half of each, to "
                        "see which half limits AP: ideal classes with the network's instance "
                        "outputs ('oracle-semantics'), the network's classes with ideal "
                        "instance outputs ('oracle-instances')")


def _add_params_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params-file", type=Path, default=None,
                   help="ROS 2 parameter YAML with the method's parameters "
                        "(default: the shipped config/occuseg.yaml)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ScanNet instance AP of predictions against ground truth")
    p.add_argument("--pred", type=Path, nargs="+", required=True, help="prediction .npz files")
    p.add_argument("--gt", type=Path, nargs="+", required=True,
                   help="scene files with semantic and instance, in the order of --pred")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-stage timing table (machine and date included)")
    p.add_argument("scenes", type=Path, nargs="*", help="extra scene files to time")
    p.add_argument("--model", type=Path, default=None, help="checkpoint for the network stage")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per scene (median)")
    p.add_argument("--no-generated", action="store_true",
                   help="skip the generated ScanNet-sized room")
    p.add_argument("--scaling", action="store_true",
                   help="instead: latency of one update against map size, full recompute and "
                        "incremental, per stage")
    p.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=None, metavar="N,N,...",
                   help="map sizes in voxels for --scaling (default: 10k to 1M)")
    p.add_argument("--patches", type=int, default=5,
                   help="timed increments per map size for --scaling (p50, p95)")
    p.add_argument("--refresh-margin-m", type=float, default=None,
                   help="--scaling: the incremental refresh margin, metres (default: the "
                        "node's for the device)")
    p.add_argument("--context-margin-m", type=float, default=None,
                   help="--scaling: the incremental context margin, metres (default: the "
                        "node's for the device)")
    _add_params_file(p)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write a procedurally generated furnished room")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="scene .npz to write")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="score a model on held-out generated rooms (or scene "
                                        "files): AP table and occupancy accuracy (eq. 11)")
    p.add_argument("--seeds", type=_seed_range, default=(100_000, 100_020), metavar="FIRST:END",
                   help="generated rooms to score (default: 20 seeds never used in training)")
    p.add_argument("--files", type=Path, nargs="+", default=[],
                   help="scene files with ground truth instead of generated rooms")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint (default: the shipped model in models/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_predictions(p)
    p.add_argument("--oracle-noise", type=float, default=0.0, metavar="SIGMA")
    p.add_argument("--no-occupancy", action="store_true",
                   help="r = 1 in eq. (14) and no r filter (Table 6, 'w/o occupancy')")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_params_file(p)


def _add_scannet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scannet", help="convert ScanNet v2 scans (vh_clean_2.ply, segs.json, "
                                       "aggregation.json) into scene .npz files")
    p.add_argument("scene_dirs", type=Path, nargs="+", help="ScanNet scene directories")
    p.add_argument("--out", type=Path, required=True, help="directory for the .npz files")
    p.add_argument("--label-map", type=Path, default=None,
                   help="scannetv2-labels.combined.tsv (default: found beside the scans)")


def _seed_range(text: str) -> tuple[int, int]:
    """``A:B`` -> (A, B), the seeds A..B-1."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected FIRST:END seeds, got {text!r}") from exc
    if hi <= lo:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return lo, hi


def _loss_setting(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .core.training import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train the network (Adam, eq. 1) on generated rooms or "
                                     "scene files; resumable; torchrun for several GPUs")
    p.add_argument("--out", type=Path, default=Path(d.out_dir), help="output directory")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="scenes per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam's initial learning rate")
    p.add_argument("--crop-m", type=float, default=d.crop_m,
                   help="side of the random square training crop in metres (0: whole scenes)")
    p.add_argument("--train-seeds", type=_seed_range, default=d.train_seeds,
                   metavar="FIRST:END", help="generated training rooms")
    p.add_argument("--val-seeds", type=_seed_range, default=d.val_seeds,
                   metavar="FIRST:END", help="generated validation rooms")
    p.add_argument("--train-files", type=Path, nargs="+", default=[],
                   help="scene files to train on instead of generated rooms")
    p.add_argument("--val-files", type=Path, nargs="+", default=[],
                   help="scene files to validate on instead of generated rooms")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="steps between validation and checkpoints")
    p.add_argument("--voxel-size-m", type=float, default=d.voxel_size_m,
                   help="voxel edge in metres; stored in the checkpoint, which then sets it "
                        "for segmentation")
    p.add_argument("--loss", type=_loss_setting, action="append", default=[],
                   metavar="NAME=VALUE", help="a LossConfig field, e.g. regularisation_weight=1 "
                   f"(default {d.loss}); repeatable")
    p.add_argument("--base-channels", type=int, default=d.network["base_channels"])
    p.add_argument("--num-levels", type=int, default=d.network["num_levels"])
    p.add_argument("--embedding-dim", type=int, default=d.network["embedding_dim"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--class-balance", type=float, default=d.class_balance, metavar="P",
                   help="weigh the semantic cross entropy by (class frequency / median)^-P "
                        "over the training scenes (0: unweighted, as in the paper)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    p.add_argument("--init-from", type=Path, default=None,
                   help="checkpoint whose weights start a new run (fine-tuning: fresh optimiser "
                        "and schedule, the checkpoint's network shape)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write an inference-only copy of a training checkpoint "
                                      "(no optimizer state), e.g. to ship in models/")
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by occuseg train")
    p.add_argument("out", type=Path, help="the model file to write")


def _add_node(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run the ROS 2 segmentation node (as ros2 run occuseg_ros "
                                    "occuseg_node); arguments after --ros-args go to ROS")
    p.add_argument("--params-file", type=Path, default=None,
                   help="ROS 2 parameter YAML (default: the shipped config/occuseg.yaml)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: models/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.epilog = "ROS arguments follow --ros-args: remappings (-r a:=b), -p name:=value, ..."


def _add_bench_node(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-node", help="latency of the ROS node on a scene streamed as "
                                          "surface increments (p50, p95)")
    p.add_argument("scene", type=Path, help="scene file (.npz or .ply)")
    p.add_argument("--increments", type=int, default=20, help="slabs the scene is sent in")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: models/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")


def _add_live(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="the live system on the simulated RGB-D camera in one "
                                    "process (what live.launch.py starts); writes the labelled "
                                    "map, a picture and the scores at the end")
    p.add_argument("--duration", type=float, default=90.0,
                   help="seconds to run (Ctrl-C ends earlier, cleanly)")
    p.add_argument("--out", type=Path, default=Path("occuseg_out"), help="output directory")
    p.add_argument("--seed", type=int, default=7, help="generated room the camera flies through")
    p.add_argument("--loop-s", type=float, default=12.0,
                   help="simulated seconds of one loop through the room")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--params-file", type=Path, default=None,
                   help="ROS 2 parameter YAML (default: the shipped config/occuseg.yaml)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: models/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--viewer", action="store_true",
                   help="serve a live 3D view to a web browser (offline, no telemetry)")
    p.add_argument("--viewer-address", default="127.0.0.1:8765", metavar="HOST:PORT",
                   help="where the view is served (default: this machine only)")
    p.add_argument("--memory-period-s", type=float, default=10.0,
                   help="seconds between two samples of the process's memory (RSS), written "
                        "to memory.csv and summarised in scores.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="occuseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_segment, _add_evaluate, _add_bench, _add_generate, _add_train,
                _add_export, _add_validate, _add_scannet, _add_node, _add_bench_node,
                _add_live, _add_bag):
        add(sub)
    return parser


def _params_path(params_file: Path | None) -> Path | None:
    """The parameter file to use: the one given (which must exist), else the shipped
    config/occuseg.yaml (None when the package's share files are not installed)."""
    from .core.paths import share_file

    if params_file is not None and not params_file.is_file():
        raise SceneError(f"parameter file not found: {params_file}")
    return params_file or share_file("config", "occuseg.yaml")


def _pipeline_config(params_file: Path | None):
    from .core.pipeline import PipelineConfig

    path = _params_path(params_file)
    return PipelineConfig.from_yaml(path) if path is not None else PipelineConfig()


def _network_predictor(model: Path | None, device: str):
    from .core.checkpoint import CheckpointError, NetworkPredictor, default_model_path

    path = model or default_model_path()
    if path is None:
        raise CheckpointError("no model given and none shipped in models/: pass --model PATH, "
                              "or use --predictions oracle on a scene with ground truth")
    return NetworkPredictor.from_checkpoint(path, device)


def _predictor_factory(args: argparse.Namespace, config: PipelineConfig,
                       seed: int) -> Callable[[Scene], Predictor]:
    """The per-scene predictor that ``--predictions`` asks for.

    Loads the network unless the outputs are the oracle's alone, and then sets
    ``config.voxel_size_m`` to the model's (it was trained at that voxel size).
    """
    from .core.predictions import mixed_predictions, oracle_predictions

    source = args.predictions
    network = None
    if source != "oracle":
        network = _network_predictor(args.model, args.device)
        config.voxel_size_m = network.voxel_size_m

    def make(scene: Scene):
        if source == "network":
            return network
        if not scene.has_ground_truth:
            raise SceneError(f"{scene.name}: --predictions {source} needs 'semantic' and "
                             "'instance'")

        def oracle(grid):
            return oracle_predictions(grid, scene.semantic, scene.instance, args.oracle_noise,
                                      seed)

        if source == "oracle":
            return oracle
        if source == "oracle-semantics":
            return lambda grid: mixed_predictions(semantics=oracle(grid), instances=network(grid))
        return lambda grid: mixed_predictions(semantics=network(grid), instances=oracle(grid))

    return make


def _print_classes(instance_labels: np.ndarray) -> None:
    """One line per class: its name and how many instances have it."""
    labels, counts = np.unique(instance_labels, return_counts=True)
    for label, count in zip(labels, counts):
        print(f"  {label_name(label):<16} {count:3d}")


def cmd_segment(args: argparse.Namespace) -> int:
    from .core.pipeline import segment_points

    config = _pipeline_config(args.params_file)
    if (args.scene / "metadata.yaml").is_file():
        return _segment_bag(args, config)
    scene = load_scene(args.scene)
    predictor = _predictor_factory(args, config, args.seed)(scene)
    if args.no_occupancy:
        config.clustering.use_occupancy = False
    result = segment_points(scene.xyz, scene.rgb, predictor, config)
    # One row per row of the input file: points dropped for NaN coordinates get no label.
    PredictionFile(semantic=scene.to_source(result.semantic, 0),
                   instance=scene.to_source(result.instance, -1),
                   instance_ids=np.arange(result.num_instances, dtype=np.int32),
                   instance_labels=result.instance_labels,
                   instance_scores=result.instance_scores).save(args.out)
    print(f"{scene.name}: {scene.num_points} points, {result.num_voxels} voxels, "
          f"{result.num_supervoxels} super-voxels, {result.num_instances} instances "
          f"({args.predictions} predictions)")
    _print_classes(result.instance_labels)
    print("  " + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.timings_s.items()))
    print(f"wrote {args.out}")
    return 0


def _segment_bag(args: argparse.Namespace, config) -> int:
    from .core.segmenter import Segmenter
    from .ros.bag import segment_bag

    if args.predictions != "network":
        raise SceneError(f"a bag has no ground truth: --predictions {args.predictions} needs a "
                         "scene file")
    predictor = _network_predictor(args.model, args.device)
    config.voxel_size_m = predictor.voxel_size_m
    if args.no_occupancy:
        config.clustering.use_occupancy = False
    seg, skipped, frames = segment_bag(args.scene, Segmenter(predictor, config))
    instance = np.where(seg.instance > 0, seg.instance.astype(np.int64), -1).astype(np.int32)
    save_scene(args.out, Scene(seg.xyz, seg.rgb, seg.semantic.astype(np.int32), instance,
                               name=args.scene.name))
    print(f"{args.scene.name}: {frames} frames integrated, {seg.xyz.shape[0]} map points, "
          f"{seg.num_voxels} voxels, {len(seg.instances)} instances")
    for reason, count in sorted(skipped.items()):
        print(f"  skipped {count} x {reason}")
    _print_classes(seg.instances.labels)
    print(f"wrote {args.out}")
    return 0


def _add_bag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bag", help="record, replay and summarise rosbag2 bags")
    verbs = p.add_subparsers(dest="bag_command", required=True, metavar="VERB")
    r = verbs.add_parser("record", help="record the simulated camera (and/or the surface "
                                        "increments) into a new bag")
    r.add_argument("out", type=Path, help="bag directory to create")
    r.add_argument("--duration", type=float, default=10.0, help="seconds to record")
    r.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    r.add_argument("--topics", nargs="+", default=None,
                   help="topics to record (default: the camera's depth, colour, camera info "
                        "and pose; /surface_cloud adds the reconstructor)")
    r.add_argument("--external", action="store_true",
                   help="record what runs on the ROS graph instead of starting the simulator")
    r.add_argument("--seed", type=int, default=7, help="room of the simulated camera")
    r.add_argument("--width", type=int, default=640)
    r.add_argument("--height", type=int, default=480)
    r.add_argument("--loop-s", type=float, default=12.0)
    pl = verbs.add_parser("play", help="replay a bag into live topics with its timing")
    pl.add_argument("bag", type=Path)
    pl.add_argument("--rate", type=float, default=1.0, help="speed factor")
    pl.add_argument("--loop", action="store_true", help="start over at the end")
    pl.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO")
    pl.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    i = verbs.add_parser("info", help="topics, types, counts and duration of a bag")
    i.add_argument("bag", type=Path)


def cmd_bag(args: argparse.Namespace) -> int:
    from .ros.bag import CAMERA_TOPICS, SURFACE_TOPICS, bag_info, play_bag, record_live

    if args.bag_command == "info":
        print(bag_info(args.bag).format())
        return 0
    if args.bag_command == "play":
        remap = {}
        for item in args.remap:
            source, sep, target = item.partition(":=")
            if not sep or not source or not target:
                raise SceneError(f"--remap expects FROM:=TO, got {item!r}")
            remap[source] = target
        count = play_bag(args.bag, args.rate, args.loop, remap, clock=not args.no_clock)
        print(f"published {count} messages")
        return 0
    known = {**CAMERA_TOPICS, **SURFACE_TOPICS}
    args.topics = args.topics or sorted(CAMERA_TOPICS)
    unknown = [t for t in args.topics if t not in known]
    if unknown:
        raise SceneError(f"unknown topics {unknown}; known: {sorted(known)}")
    overrides = {"sim_camera": {"seed": args.seed, "width": args.width,
                                "height": args.height, "loop_s": args.loop_s}}
    counts = record_live(args.out, args.duration, {t: known[t] for t in args.topics},
                         args.storage, simulate=not args.external, overrides=overrides)
    print(f"wrote {args.out}: " + ", ".join(f"{t} {c}" for t, c in sorted(counts.items())))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .core.evaluation import evaluate_scenes, format_table

    if len(args.pred) != len(args.gt):
        raise SceneError(f"{len(args.pred)} prediction files but {len(args.gt)} ground truths")
    scenes = []
    for pred_path, gt_path in zip(args.pred, args.gt):
        pred = PredictionFile.load(pred_path)
        gt = load_scene(gt_path)
        if not gt.has_ground_truth:
            raise SceneError(f"{gt_path}: no 'semantic' and 'instance' ground truth")
        if gt.source_points != pred.semantic.shape[0]:
            raise SceneError(f"{pred_path} has {pred.semantic.shape[0]} points but {gt_path} "
                             f"has {gt.source_points}")
        scenes.append((gt.semantic, gt.instance, gt.from_source(pred.instance),
                       pred.instance_labels, pred.instance_scores))
    result = evaluate_scenes(scenes)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .core.bench import SCALING_SIZES, run_benchmark, run_scaling_benchmark
    from .core.checkpoint import resolve_device
    from .core.incremental import IncrementalConfig

    if args.scaling:
        margins = IncrementalConfig.for_device(resolve_device(args.device).type,
                                               args.refresh_margin_m, args.context_margin_m)
        print(run_scaling_benchmark(args.model, args.device, args.sizes or SCALING_SIZES,
                                    args.patches, _pipeline_config(args.params_file), margins))
        return 0
    print(run_benchmark(args.scenes, model=args.model, device=args.device,
                        repeat=args.repeat, include_generated=not args.no_generated,
                        config=_pipeline_config(args.params_file)))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .core.scene import save_scene
    from .core.synthetic import generate_room

    scene = generate_room(args.seed)
    save_scene(args.out, scene)
    print(f"wrote {args.out}: {scene.num_points} points, "
          f"{np.unique(scene.instance).size} instances")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .core.checkpoint import export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.out)
    scores = meta.get("validation", {})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): step "
          f"{meta.get('step', '?')}, {meta['voxel_size_m']} m voxels, validation AP50 "
          f"{scores.get('ap50', float('nan')):.3f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .core.checkpoint import resolve_device
    from .core.model import NetworkConfig
    from .core.training import TrainConfig, train

    network = NetworkConfig(base_channels=args.base_channels, num_levels=args.num_levels,
                            embedding_dim=args.embedding_dim)
    config = TrainConfig(out_dir=str(args.out), steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, crop_m=args.crop_m, train_seeds=args.train_seeds,
                         val_seeds=args.val_seeds,
                         train_files=[str(f) for f in args.train_files],
                         val_files=[str(f) for f in args.val_files], val_every=args.val_every,
                         voxel_size_m=args.voxel_size_m, network=network.to_dict(),
                         loss={**TrainConfig().loss, **dict(args.loss)}, seed=args.seed,
                         class_balance=args.class_balance,
                         init_from=None if args.init_from is None else str(args.init_from))
    best = train(config, resolve_device(args.device), resume=args.resume)
    print(f"best checkpoint: {best}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .core.evaluation import format_table
    from .core.synthetic import generate_room
    from .core.validation import OCCUPANCY_TOLERANCE, validate_scenes

    config = _pipeline_config(args.params_file)
    if args.no_occupancy:
        config.clustering.use_occupancy = False
    scenes = ([load_scene(f) for f in args.files] if args.files
              else (generate_room(seed) for seed in range(*args.seeds)))
    result = validate_scenes(scenes, _predictor_factory(args, config, 0), config)
    errors = result.occupancy_errors
    if args.json:
        print(json.dumps({**result.metrics.to_dict(),
                          "occupancy_accuracy": result.occupancy_accuracy,
                          "occupancy_instances": int(errors.size)}, indent=2))
    else:
        print(f"occupancy: R_c < {OCCUPANCY_TOLERANCE} for "
              f"{int((errors < OCCUPANCY_TOLERANCE).sum())} of {errors.size} instances "
              f"({result.occupancy_accuracy:.1%})")
        print(format_table(result.metrics))
    return 0


def cmd_scannet(args: argparse.Namespace) -> int:
    from .core.scannet import convert_scannet

    for path in convert_scannet(args.scene_dirs, args.out, args.label_map):
        print(f"wrote {path}")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from .ros.segmentation_node import main as node_main

    params = _params_path(args.params_file)
    ros_args = ["--ros-args"] + (["--params-file", str(params)] if params else [])
    for name, value in (("model_path", args.model), ("device", args.device)):
        if value is not None:
            ros_args += ["-p", f"{name}:={value}"]
    node_main(["occuseg_node"] + ros_args + args.ros_args[1:])
    return 0


def cmd_bench_node(args: argparse.Namespace) -> int:
    from .ros.latency_bench import run_latency_benchmark

    print(run_latency_benchmark(args.scene, args.model, args.device, args.increments))
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from .core.evaluation import format_table
    from .ros.live import run_live

    params = _params_path(args.params_file)
    overrides: dict[str, dict] = {
        "sim_camera": {"seed": args.seed, "width": args.width, "height": args.height,
                       "loop_s": args.loop_s},
        "occuseg": {}, "rgbd_reconstructor": {}}
    if args.model is not None:
        overrides["occuseg"]["model_path"] = str(args.model)
    if args.device is not None:
        overrides["occuseg"]["device"] = args.device
        overrides["rgbd_reconstructor"]["device"] = args.device
    viewer = None
    if args.viewer:
        host, _, port = args.viewer_address.rpartition(":")
        if not host or not port.isdigit():
            raise SceneError(f"--viewer-address must be HOST:PORT, got {args.viewer_address!r}")
        viewer = (host, int(port))
    result = run_live(args.out, args.duration, params, overrides, viewer_address=viewer,
                      memory_period_s=args.memory_period_s)
    print(f"{result.frames} frames in {result.seconds:.0f} s ({result.frames / result.seconds:.1f}"
          f"/s), {result.segmentations} segmentations; scored against the simulator's "
          "ground truth:")
    print(format_table(result.metrics))
    print(result.memory_line())
    for path in result.files:
        print(f"wrote {path}")
    return 0


COMMANDS = {"segment": cmd_segment, "evaluate": cmd_evaluate, "bench": cmd_bench,
            "generate": cmd_generate, "train": cmd_train, "export": cmd_export,
            "validate": cmd_validate, "scannet": cmd_scannet, "node": cmd_node,
            "bench-node": cmd_bench_node, "live": cmd_live,
            "bag": cmd_bag}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything from --ros-args on belongs to ROS (``occuseg node``), not to argparse.
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    args = build_parser().parse_args(argv[:split])
    args.ros_args = argv[split:]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as exc:  # SceneError and CheckpointError are ValueErrors
        if args.verbose:
            raise
        print(f"occuseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
