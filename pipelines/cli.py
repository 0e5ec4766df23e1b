"""``kfp-serve``: compile, list, run locally and submit the suite's pipelines.

Nothing heavy is imported at start-up: ``--help`` answers without importing kfp or torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_COMPILED = "compiled"
DEFAULT_OUTPUT = "local_outputs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kfp-serve",
        description="Kubeflow Pipelines components and pipelines that take a trained PyTorch"
        " model to a validated serving endpoint.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list every component and pipeline")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("compile", help="compile every component and pipeline to YAML")
    p.add_argument("--output", default=DEFAULT_COMPILED, help="folder (default: compiled)")
    p.add_argument("--check", action="store_true",
                   help="compare with the folder instead of writing; exit 1 when out of date")
    p.add_argument("--image", help="component image REGISTRY/PATH:TAG (default: $KFP_SERVE_IMAGE"
                   " or the tag of this version)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("docs", help="write docs/components.md (the component reference)")
    p.add_argument("--output", default="docs/components.md")
    p.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("run", help="run a pipeline on this machine with kfp.local", add_help=False,
                       description="Run a pipeline on this machine with kfp.local. `kfp-serve run"
                       " PIPELINE --help` also lists the pipeline's parameters.")
    p.add_argument("-h", "--help", action="store_true", help="show this help (and, after a"
                   " pipeline name, its parameters) and exit")
    p.add_argument("pipeline", nargs="?")
    p.add_argument("--local", action="store_true",
                   help="run on this machine (what `run` always does; kept so scripts that pass"
                   " it work): every task a subprocess of this environment (kfp.local's"
                   " SubprocessRunner), or a container with --containers")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="artifact root (default: local_outputs)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--gcs-emulator", action="store_true",
                   help="serve gs:// destinations from a local fake-gcs-server during the run")
    p.add_argument("--containers", action="store_true",
                   help="run every task in the suite's image (kfp.local.DockerRunner; podman's"
                   " Docker API when no Docker engine runs); build it first with `kfp-serve image build`")
    p.add_argument("--image", help="with --containers: the image to run (default: $KFP_SERVE_IMAGE"
                   " or the tag of this version)")
    p.add_argument("--memory", default="", help="with --containers: memory limit per task, e.g. 4g")
    p.set_defaults(func=cmd_run, run_parser=p)

    p = sub.add_parser("image", help="build the component image with podman (no Docker engine)")
    p.add_argument("action", choices=["base", "build"],
                   help="base: make a Debian base image with debootstrap; build: build Dockerfile on it")
    p.add_argument("--tag", help="image tag (default: the tag the compiled components name)")
    p.add_argument("--base-image", default="localhost/kfp-serve-base:bookworm",
                   help="BASE_IMAGE of the Dockerfile (must be in local storage)")
    p.add_argument("--dockerfile", default="Dockerfile")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("submit", help="submit a pipeline to Kubeflow Pipelines or Vertex AI")
    p.add_argument("pipeline")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="KFP API URL, e.g. http://localhost:8080")
    target.add_argument("--vertex", action="store_true", help="submit to Vertex AI Pipelines")
    p.add_argument("--namespace", help="KFP namespace (multi-user deployments)")
    p.add_argument("--experiment", help="KFP experiment (default: Default)")
    p.add_argument("--token", help="bearer token for the KFP API; prefer $KFP_SERVE_KFP_TOKEN"
                   " (a flag shows in `ps` to every user of the machine)")
    p.add_argument("--project", help="Google Cloud project (with --vertex)")
    p.add_argument("--region", default="us-central1", help="Vertex AI region")
    p.add_argument("--pipeline-root", help="artifact root: gs://... (required with --vertex)")
    p.add_argument("--service-account", help="service account the run uses")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=cmd_submit)
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from kfp_serve.pipelines import registry

    for title, names, load in (
        ("Components", registry.component_names(), registry.load_component),
        ("Pipelines", registry.pipeline_names(), registry.load_pipeline),
    ):
        print(f"{title}:")
        width = max(len(n) for n in names)
        for name in names:
            print(f"  {name:<{width}}  {registry.description(load(name))}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from kfp_serve.pipelines import compile as compiling

    if args.check:
        result = compiling.check(args.output)
        if result.ok:
            print(f"{args.output}/ is up to date")
            return 0
        for label, names in (("stale", result.stale), ("missing", result.missing),
                             ("extra", result.extra)):
            for name in names:
                print(f"{label}: {args.output}/{name}", file=sys.stderr)
        for text in result.diffs.values():
            print(f"\n{text}", file=sys.stderr)
        fix = "kfp-serve compile" + (f" --output {args.output}" if args.output != DEFAULT_COMPILED
                                     else "")
        print(f"\n{args.output}/ does not match the code; run `{fix}` and commit the result",
              file=sys.stderr)
        return 1
    written = compiling.compile_all(args.output)
    print(f"wrote {len(written)} files under {args.output}/")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from kfp_serve.pipelines import component_docs

    if args.check:
        current = Path(args.output).read_text() if Path(args.output).is_file() else ""
        if current != component_docs.render():
            print(f"{args.output} is out of date; run `kfp-serve docs` and commit it", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    changed = component_docs.write(args.output)
    print(f"{'wrote' if changed else 'unchanged:'} {args.output}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from kfp_serve.components.errors import UserError
    from kfp_serve.pipelines import registry
    from kfp_serve.pipelines.interrupt import interruptible
    from kfp_serve.pipelines.needs import check_credentials
    from kfp_serve.pipelines.params import parse_params
    from kfp_serve.pipelines.run_local import run_local

    if args.help:
        print(args.run_parser.format_help())
        print(pipeline_parameters(args.pipeline) if args.pipeline
              else "pipelines: " + ", ".join(registry.pipeline_names()))
        return 0
    if not args.pipeline:
        raise UserError("name the pipeline to run: kfp-serve run PIPELINE (one of"
                        f" {', '.join(registry.pipeline_names())}; --help lists its parameters)")

    if (args.image or args.memory) and not args.containers:
        raise UserError("--image and --memory go with --containers")
    if args.image:
        os.environ["KFP_SERVE_IMAGE"] = args.image  # read when the components are defined
    pipeline = registry.load_pipeline(args.pipeline)
    params = parse_params(args.param, pipeline, here=True)
    check_credentials(args.pipeline, pipeline, params, gcs_emulator=args.gcs_emulator)
    with interruptible():
        result = run_local(args.pipeline, args.output, params, gcs_emulator=args.gcs_emulator,
                           containers=args.containers, memory=args.memory)
    print()
    if result.run_dir is not None:
        print(f"artifacts: {result.run_dir}")
    for path in result.summary_paths:
        print(f"report:    {path}\n")
        print(path.read_text())
    if not result.succeeded:
        print(f"error: {result.error}", file=sys.stderr)
        return result.exit_code
    return 0


def pipeline_parameters(name: str) -> str:
    """``--param`` lines for every parameter of pipeline ``name``: type, default, description."""
    from kfp_serve.pipelines import registry

    inputs = registry.load_pipeline(name).component_spec.inputs or {}
    lines = [f"parameters of {name} (--param NAME=VALUE):"]
    width = max((len(key) for key in inputs), default=0)
    for key, spec in inputs.items():
        kind = str(spec.type).split("@")[0].lower()
        default = f" = {spec.default!r}" if spec.optional else " (required)"
        about = " ".join((spec.description or "").split())
        lines.append(f"  {key:<{width}}  {kind}{default}" + (f"\n  {'':<{width}}  {about}"
                                                            if about else ""))
    return "\n".join(lines)


def cmd_image(args: argparse.Namespace) -> int:
    from kfp_serve.pipelines import image_build

    if args.action == "base":
        tag = image_build.make_base_image(args.tag or args.base_image)
        print(f"base image: {tag}")
        return 0
    from kfp_serve.components import images

    built = image_build.build_image(args.tag or images.SUITE_IMAGE, args.base_image, Path.cwd(),
                              args.dockerfile)
    print(f"image: {built.tag}\nsize: {built.size_bytes / 2**30:.2f} GiB\nuser: {built.user}\n"
          f"built in {built.seconds:.0f} s")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from kfp_serve.pipelines import registry, submit
    from kfp_serve.pipelines.params import parse_params

    params = parse_params(args.param, registry.load_pipeline(args.pipeline))
    if args.vertex:
        if not args.pipeline_root:
            from kfp_serve.components.errors import UserError

            raise UserError("--pipeline-root gs://BUCKET/PATH is required with --vertex")
        result = submit.submit_vertex(args.pipeline, args.project, args.region,
                                      args.pipeline_root, params, args.service_account)
    else:
        if args.token:
            print("warning: --token is visible to every user of this machine (ps); set"
                  " $KFP_SERVE_KFP_TOKEN instead", file=sys.stderr)
        token = os.environ.get("KFP_SERVE_KFP_TOKEN") or args.token
        result = submit.submit_kfp(args.pipeline, args.host, params, namespace=args.namespace,
                                   experiment=args.experiment, pipeline_root=args.pipeline_root,
                                   service_account=args.service_account, token=token)
    print(f"submitted {args.pipeline}: run {result.run_id}\n{result.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "image", None):
        os.environ["KFP_SERVE_IMAGE"] = args.image  # read when the components are imported
    from kfp_serve.components.errors import KfpServeError

    try:
        return args.func(args)
    except KfpServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # pipelines.interrupt.Interrupted says what it stopped
        print(f"error: {err}" if str(err) else "error: interrupted (Ctrl-C)", file=sys.stderr)
        return int(getattr(err, "exit_code", 130))


if __name__ == "__main__":
    sys.exit(main())
