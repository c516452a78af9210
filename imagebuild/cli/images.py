"""The commands that show or change the images in the store: images, inspect, history, rmi, analyze, and
the layer sizes they and the build summary share."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from imagebuild import analyze
from imagebuild.analyze import human
from imagebuild.errors import BuildError
from imagebuild.store.images import Image, Store, normalize_tag

_LAYER_SIZES: dict[str, int] = {}  # a stored layer never changes: each is walked once per command


def layer_sizes(store: Store, image: Image) -> list[int]:
    """Each layer's content size, bottom first: the definition `analyze` and the build summary use too."""
    sizes = []
    for layer in image.layers:
        path = store.layer_dir(layer.diff_id)
        if path not in _LAYER_SIZES:
            _LAYER_SIZES[path] = analyze.layer_size(path)
        sizes.append(_LAYER_SIZES[path])
    return sizes


def image_size(store: Store, image: Image) -> int:
    return sum(layer_sizes(store, image))


def cmd_images(store: Store) -> None:
    tags: dict[str, list[str]] = {}
    for tag, image_id in store.tags().items():
        tags.setdefault(image_id, []).append(tag)
    rows = []
    for image_id in store.image_ids():
        image = store.resolve(image_id)
        for tag in sorted(tags.get(image_id, ["<none>:<none>"])):
            repo, _, name = tag.rpartition(":")
            rows.append((repo, name, image_id[7:19], human(image_size(store, image))))
    print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} SIZE")
    for row in rows:
        print(f"{row[0]:<30} {row[1]:<12} {row[2]:<14} {row[3]}")


def inspect_doc(store: Store, image: Image) -> dict[str, Any]:
    config = image.config.config
    doc: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": sorted(t for t, i in store.tags().items() if i == image.id),
        "Created": image.config.created,
        "Architecture": image.config.architecture,
        "Os": image.config.os,
        "Size": image_size(store, image),
        "CompressedSize": sum(layer.blob.size for layer in image.layers),
        "Config": {
            "User": config.user or "",
            "Env": config.env,
            "Cmd": config.cmd,
            "Entrypoint": config.entrypoint,
            "WorkingDir": config.working_dir or "",
            "ExposedPorts": {p: {} for p in config.exposed_ports},
            "Volumes": {v: {} for v in config.volumes} or None,
            "Labels": config.labels or None,
            "StopSignal": config.stop_signal,
            "Shell": config.shell,
            "Healthcheck": config.healthcheck.to_dict() if config.healthcheck else None,
            "OnBuild": config.on_build or None,
        },
        "RootFS": {"Type": "layers", "Layers": list(image.config.rootfs.diff_ids)},
        "Manifest": {"Layers": [layer.blob.to_dict() for layer in image.layers]},
    }
    return doc


def cmd_history(store: Store, image: Image) -> None:
    sizes = iter(layer_sizes(store, image))
    rows = []
    for entry in image.config.history:  # layers pair with the non-empty entries, oldest first
        size = "0B" if entry.empty_layer else human(next(sizes, 0))
        rows.append(f"{(entry.created_by or '')[:60]:<60} {size:>10}  {entry.comment or ''}")
    print(f"{'STEP':<60} {'SIZE':>10}  COMMENT")
    print("\n".join(reversed(rows)))


def cmd_rmi(store: Store, names: Sequence[str]) -> None:
    for name in names:
        image = store.resolve(name)
        if normalize_tag(name) in store.tags():
            store.untag(name)
            print(f"Untagged: {normalize_tag(name)}")
        if not any(i == image.id for i in store.tags().values()):
            store.remove_image(image.id)
            print(f"Deleted: {image.id}")
    print("Run 'imagebuild prune' to free the layers no image uses")


def analysis(store: Store, image: Image) -> analyze.Report:
    made_by = [h.created_by or "" for h in image.config.history if not h.empty_layer]
    made_by += [""] * (len(image.layers) - len(made_by))
    dirs = [store.layer_dir(layer.diff_id) for layer in image.layers]
    return analyze.analyze(dirs, made_by[: len(dirs)])


def cmd_analyze(store: Store, args: argparse.Namespace) -> int:
    report = analysis(store, store.resolve(args.image))
    if args.layer is not None:
        if not 0 <= args.layer < len(report.layers):
            raise BuildError(f"--layer {args.layer}: the image has layers 0 to {len(report.layers) - 1}")
        layer = report.layers[args.layer]
        if args.tree:
            print(analyze.render_tree(layer))
        else:
            for change in layer.changes:
                print(f"{change.kind:<8} {human(change.size):>9}  /{change.path}")
        return 0
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else analyze.render_text(report))
    if args.ci:
        failures = []
        if report.efficiency < args.lowest_efficiency:
            failures.append(f"efficiency {report.efficiency:.1%} is below {args.lowest_efficiency:.1%}")
        if args.highest_wasted_bytes is not None and report.wasted > args.highest_wasted_bytes:
            failures.append(f"{report.wasted} wasted bytes exceed {args.highest_wasted_bytes}")
        if failures:
            print(f"imagebuild: analyze --ci failed: {'; '.join(failures)}", file=sys.stderr)
            return 1
    return 0
