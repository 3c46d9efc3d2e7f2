"""The ``doublure`` command: the app, and the headless jobs pipeline TDs script (render, info, track,
extract, train, demo).

Everything but opening the app runs without Qt, so a farm worker needs no display. User errors print one
line naming the file, node, knob or frame, with no traceback, and exit with status 1.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import Callable, Sequence

# Before torch and mediapipe load: OpenMP threads that spin while waiting make small torch ops 20-30x slower
# on shared cores (a farm node, a workstation also running the app); mediapipe's C++ logging is noise here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from doublure.engine import DoublureError  # noqa: E402
from doublure.engine.memory import keep_freed_frames  # noqa: E402
from doublure.faces.face import FACE_TYPES  # noqa: E402

SUBCOMMANDS = ("render", "info", "track", "occlusion", "extract", "train", "adapt", "references", "demo", "verify")


def _version() -> str:
    try:
        return importlib.metadata.version("doublure")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_project(path: str):
    import doublure.nodes  # noqa: F401  (registers the node library)
    from doublure import engine

    return engine.load(path)


def cmd_render(args: argparse.Namespace) -> int:
    from doublure.engine.progress import ProgressBar
    from doublure.engine.provenance import make_override
    from doublure.engine.render import resolve_frames

    override = make_override(args.override_consent) if args.override_consent is not None else None
    if args.scheduler or args.workers:
        from doublure.farm.render import farm_render

        report = farm_render(args.project, writes=args.write, frames=args.frames, scheduler=args.scheduler,
                             workers=args.workers, chunk=args.chunk, path_map=args.path_map,
                             halt_on_error=args.halt_on_error, proxy=args.proxy,
                             frame_timeout=args.frame_timeout, frame_workers=args.frame_workers, progress=True,
                             consent_override=override)
    else:
        if args.path_map or args.frame_timeout:
            raise DoublureError("--path-map and --frame-timeout apply to farm workers: use them with --scheduler "
                                "or --workers")
        graph = _load_project(args.project)
        frames = resolve_frames(graph, args.frames)
        bar = ProgressBar(len(frames), "frames")
        bar.update(0, "starting")  # at once, however long the range
        try:
            report = graph.render(args.write, frames, proxy=args.proxy, halt_on_error=args.halt_on_error,
                                  progress=lambda done, total, frame: bar.update(done, f"frame {frame}"),
                                  frame_workers=args.frame_workers, consent_override=override)
        finally:
            bar.close()
    for node, frame, why in report.failures:
        print(f"doublure: {node} frame {frame} failed: {why}", file=sys.stderr)
    if report.stale_temps:
        print(f"doublure: removed {len(report.stale_temps)} temporary file(s) that killed renders left",
              file=sys.stderr)
    if report.outdated:
        print(f"doublure: {len(report.outdated)} existing frame(s) came from another version of the graph: "
              f"rendered again", file=sys.stderr)
    print(f"rendered {len(report.written)} frame(s), skipped {len(report.skipped)} already complete, "
          f"{len(report.failures)} failed, in {report.seconds:.1f} s", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    path = args.path
    if path.endswith(".dbm") or os.path.isfile(os.path.join(path, "model.json")):
        from doublure.models.dbm import model_card

        print(model_card(path))
        return 0
    from doublure.engine.render import is_executable, resolve_frames

    graph = _load_project(path)
    s = graph.settings
    print(f"project  {graph.project_path}")
    print(f"name     {s['name']}")
    print(f"frames   {s['first']}-{s['last']} at {s['fps']:g} fps, working space {s['working_space']}")
    print("nodes:")
    for node in graph.nodes:
        inputs = ", ".join(f"{p.name}={n.name}" for p, n in zip(node.inputs, node.input_nodes) if n is not None)
        state = " (disabled)" if node.value("disable", s["first"]) else ""
        print(f"  {node.name:<16} {node.type_name:<12} {inputs}{state}")
    writes = [n for n in graph.nodes if is_executable(n)]
    if writes:
        print("writes:")
        frames = resolve_frames(graph, None)
        for node in writes:
            print(f"  {node.name:<16} {node.describe(frames)}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from doublure.nodes.facedetect import track_shot

    from doublure.engine.progress import ProgressBar

    bar: list[ProgressBar] = []

    def progress(done: int, total: int, frame: int) -> None:
        if not bar:
            bar.append(ProgressBar(total, "frames"))
        bar[0].update(done, f"frame {frame}")

    path = track_shot(args.project, args.node, progress=progress)
    if bar:
        bar[0].close()
    print(f"tracks saved to {path}")
    return 0


def cmd_occlusion(args: argparse.Namespace) -> int:
    from doublure.engine.progress import ProgressBar
    from doublure.nodes.occlusion import train_occlusion

    bar = ProgressBar(100, "%")

    def progress(fraction: float, message: str = "") -> None:
        bar.update(int(round(100 * fraction)), message)

    try:
        path = train_occlusion(args.project, args.node, progress=progress)
    finally:
        bar.close()
    print(f"occlusion matte saved to {path}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from doublure.faces.extract import extract_faceset

    from doublure.engine.progress import ProgressBar

    bar: list[ProgressBar] = []

    def progress(done: int, total: int, *_: object) -> None:
        if not bar:
            bar.append(ProgressBar(total, "frames"))
        bar[0].update(done)

    summary = extract_faceset(args.clips, args.out, size=args.size, every=args.every, face_type=args.face_type,
                              progress=progress)
    if bar:
        bar[0].close()
    print(summary["text"])
    return 0


def cmd_references(args: argparse.Namespace) -> int:
    from doublure.models.dbm import save_references
    from doublure.models.references import bank_to_bytes, build_bank

    bank, card = build_bank(args.faceset, args.count)
    data = bank_to_bytes(bank)
    save_references(args.model, data, card)
    print(f"{card['count']} reference faces of {card['faceset']} at {card['size']} px ({len(data) / 1e6:.1f} MB) "
          f"added to {args.model}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    import logging

    from doublure.engine.progress import ProgressBar
    from doublure.models.train import MIN_FACESET_FACES, ProgressLine, Trainer

    from .adapt import adaptation_config, extract_shot, plan_adaptation, use_adapted

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    graph = _load_project(args.project)
    plan = plan_adaptation(graph, args.node, out=args.out, faceset=args.faceset, target=args.target or None)
    first, last, step = plan.frames
    print(f"adapting {plan.model} to {plan.read} ({plan.plate}, frames {first}-{last}"
          f"{f' every {step}' if step > 1 else ''}) for {args.minutes:g} minutes into {plan.out}")
    if args.faceset and os.path.isfile(os.path.join(plan.faceset, "index.json")):
        print(f"using the faces already extracted in {plan.faceset}")
    else:
        bar: dict[str, ProgressBar] = {}   # one at a time, a clip each: the target's clips come first when
        # they are extracted again

        def progress(done: int, total: int, clip: str) -> None:
            if clip not in bar:
                for other in bar.values():
                    other.close()
                bar.clear()
                print(f"faces of {os.path.basename(clip)}")
                bar[clip] = ProgressBar(total, "frames")
            bar[clip].update(done)

        try:
            summary = extract_shot(graph, plan, progress=progress, min_faces=MIN_FACESET_FACES)
        finally:
            for other in bar.values():
                other.close()
        print(f"{summary['items']} faces of the shot in {plan.faceset}")
    Trainer(adaptation_config(plan, args.minutes), progress=ProgressLine()).run()
    print(f"adapted model written to {plan.out}")
    if args.apply:
        use_adapted(graph, plan)
        graph.save(args.project)
        print(f"{plan.swap} now uses it; {args.project} saved")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from doublure.faces.verify import verify_file

    verdicts = [verify_file(path) for path in args.files]
    for verdict in verdicts:
        print(verdict.text(), flush=True)
    # grep's convention: 0 found, 1 not found, 2 a file could not be read
    if any(v.synthetic for v in verdicts):
        return 0
    return 2 if any(v.error for v in verdicts) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from doublure.app.demo import run_demo

    return run_demo(headless=args.headless, out_dir=args.out)


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _path_map(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition("=")
    if not sep or not src or not dst:
        raise argparse.ArgumentTypeError(f"--path-map {text!r} is not FROM=TO")
    return src, dst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doublure", description="Face replacement compositing.")
    parser.add_argument("--version", action="version", version=f"doublure {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    render = sub.add_parser("render", help="render Write nodes of a project headless")
    render.add_argument("project")
    render.add_argument("-X", dest="write", help="Write node(s) to render, comma separated (default: all)")
    render.add_argument("-F", dest="frames", help="frames in Nuke syntax: 1-100, 1-100x2, 1,5,10-20")
    render.add_argument("--proxy", type=float, default=1.0, help="render at this scale (0.5 = half size)")
    render.add_argument("--continue-on-error", dest="halt_on_error", action="store_false",
                        help="record frames that fail for a data reason and go on")
    render.add_argument("--halt-on-error", dest="halt_on_error", action="store_true",
                        help="stop at the first failing frame (default for local renders)")
    render.add_argument("--frame-workers", type=int, default=1, metavar="N",
                        help="frames computing at once, locally or on each farm worker (default 1): more can pay "
                             "on a GPU machine with cores to spare, where one frame's CPU work leaves the GPU waiting")
    render.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): render on the farm")
    render.add_argument("--workers", type=int, help="start a local Dask cluster of N workers")
    render.add_argument("--chunk", type=int, default=10, help="frames per farm task")
    render.add_argument("--path-map", type=_path_map, action="append", default=[],
                        help="FROM=TO: rewrite file paths on farm workers")
    render.add_argument("--frame-timeout", type=float, metavar="SECONDS",
                        help="farm: a chunk that finishes no frame for this long ends its worker process and "
                             "runs again (a stuck read); default: no limit")
    render.add_argument("--override-consent", metavar="REASON",
                        help="render although a model's consent does not cover the project's declared use; who, "
                             "when and REASON go into every frame's provenance and its Content Credentials")
    render.set_defaults(func=cmd_render, halt_on_error=None)

    verify = sub.add_parser("verify", help="tell whether files hold a synthetic face: Content Credentials, header "
                            "record, face watermark; exit 0 when one does, 1 when none does, 2 when a file cannot "
                            "be read")
    verify.add_argument("files", nargs="+", metavar="FILE")
    verify.set_defaults(func=cmd_verify)

    info = sub.add_parser("info", help="describe a project (.dbl) or an identity model (.dbm)")
    info.add_argument("path")
    info.set_defaults(func=cmd_info)

    track = sub.add_parser("track", help="analyse a FaceDetect node's faces over the shot and store them")
    track.add_argument("project")
    track.add_argument("-n", "--node", required=True, help="the FaceDetect node, e.g. FaceDetect1")
    track.set_defaults(func=cmd_track)

    occlusion = sub.add_parser("occlusion", help="train an Occlusion node's matte from its painted strokes")
    occlusion.add_argument("project")
    occlusion.add_argument("-n", "--node", required=True, help="the Occlusion node, e.g. Occlusion1")
    occlusion.set_defaults(func=cmd_occlusion)

    extract = sub.add_parser("extract", help="extract an aligned faceset from clips")
    extract.add_argument("clips", nargs="+")
    extract.add_argument("--out", required=True)
    extract.add_argument("--size", type=int, default=256)
    extract.add_argument("--every", type=int, default=1, help="take every Nth frame")
    extract.add_argument("--face-type", choices=FACE_TYPES, default="whole_face",
                         help="the crop's framing: the model trained on the faceset draws faces of this type")
    extract.set_defaults(func=cmd_extract)

    train = sub.add_parser("train", help="train an identity model (see doublure train --help)", add_help=False)
    train.add_argument("args", nargs=argparse.REMAINDER)
    train.set_defaults(func=None)

    adapt = sub.add_parser("adapt", help="continue a SwapModel's identity model on the shot's own faces for a few "
                           "minutes (the plate's identity and expression carry over better)")
    adapt.add_argument("project")
    adapt.add_argument("-n", "--node", help="the SwapModel node (default: the project's only one)")
    adapt.add_argument("--minutes", type=float, default=10.0, help="training time (default 10)")
    adapt.add_argument("--out", help="the adapted model (default: MODEL_PLATE.dbm beside the project)")
    adapt.add_argument("--faceset", help="where the shot's faces go (default: PLATE_faces beside the model); "
                       "a faceset already there is used as it is")
    adapt.add_argument("--target", nargs="+", metavar="FACESET",
                       help="the target's facesets (default: those the model's card names)")
    adapt.add_argument("--apply", action="store_true", help="point the SwapModel at the adapted model and save")
    adapt.set_defaults(func=cmd_adapt)

    references = sub.add_parser("references", help="give an identity model its target's reference faces: SwapModel "
                                "draws the face from them, at their own sharpness, moved by the plate's landmarks")
    references.add_argument("model", help="the identity model (.dbm)")
    references.add_argument("--faceset", required=True, help="a faceset of the model's target (doublure extract; "
                            "256 px or more for sharp faces on large plate faces)")
    references.add_argument("--count", type=int, default=48, help="faces kept, chosen to cover the faceset's poses "
                            "and expressions (default 48)")
    references.set_defaults(func=cmd_references)

    demo = sub.add_parser("demo", help="open the demo shot (renders it when there is no display)")
    demo.add_argument("--headless", action="store_true", default=None, help="render instead of opening the app")
    demo.add_argument("--out", help="folder for the headless render (default: a new temporary folder)")
    demo.set_defaults(func=cmd_demo)
    return parser


def _run_app(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="doublure", description="Open the Doublure app.")
    parser.add_argument("--version", action="version", version=f"doublure {_version()}")
    parser.add_argument("project", nargs="?", help="a .dbl project to open")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="open, wait for the viewer to draw, save a PNG of the main window and quit")
    args = parser.parse_args(argv)
    from doublure.app.main_window import run_app

    return run_app(project_path=args.project, screenshot=args.screenshot)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_frames()  # a frame freed is memory for the next, not pages faulted in anew (engine/memory.py)
    try:
        if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
            return _run_app(argv)
        if argv[0] == "train":
            from doublure.models.train import train_main

            return train_main(argv[1:]) or 0
        args = build_parser().parse_args(argv)
        if args.command == "render" and args.halt_on_error is None:
            # Locally a failing frame stops the render; on the farm it is reported and the others go on.
            args.halt_on_error = not (args.scheduler or args.workers)
        if args.command == "demo" and args.headless is None:
            args.headless = not _has_display()
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except DoublureError as exc:
        print(f"doublure: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("doublure: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
