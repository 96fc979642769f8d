"""The ``scaffold`` command line. Commands are thin: each maps options onto one library call.

Only typer is imported at start-up; each command imports the library it needs when it runs,
so ``scaffold --help`` stays as quick as a bare typer app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from generator.errors import ScaffoldError

app = typer.Typer(
    name="scaffold",
    help="Turn a gRPC API design into a service ready for Google Cloud Run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
proto_app = typer.Typer(help="Create, compile and lint proto files.", no_args_is_help=True)
neuron_app = typer.Typer(help="Create, update, run, test and deploy neurons (services).", no_args_is_help=True)
app.add_typer(proto_app, name="proto")
app.add_typer(neuron_app, name="neuron")

NameArg = Annotated[
    str | None,
    typer.Argument(help="ORG.PRODUCT.KIND-NAME-VERSION, e.g. xmpl.br.resources-books-v1", show_default=False),
]
ProtoOpt = Annotated[
    list[Path] | None,
    typer.Option("--proto", help="An existing .proto file to use instead of NAME (repeatable).", show_default=False),
]
IncludeOpt = Annotated[
    list[Path] | None,
    typer.Option("-I", "--include", help="A folder protoc searches for imports (repeatable).", show_default=False),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also list the files that did not change.")]


def echo(message: str = "") -> None:
    typer.echo(message)


def _workspace():
    from generator import workspace

    return workspace.find()


def _report(outcomes, base: Path, show_diff: bool = False) -> None:
    from generator.writer import report

    report(outcomes, base, echo, show_diff=show_diff)


_UNCHANGED = ("identical", "skip")  # listed only with --verbose
_SUMMARY_WORDS = {"create": "created", "update": "updated", "delete": "deleted", "conflict": "conflict",
                  "skip": "kept (yours)", "identical": "identical"}


def summary(actions: list[str], dry_run: bool = False) -> str:
    """One line counting file outcomes: ``2 updated, 1 created, 27 identical, 1 conflict``
    (changes first; an action this does not know, e.g. ``conflict``, is counted as itself)."""
    from collections import Counter

    counts = Counter(actions)
    known = ["update", "create", "delete", "conflict"]
    order = [*known, *sorted(a for a in counts if a not in _SUMMARY_WORDS), "skip", "identical"]
    text = ", ".join(f"{counts[a]} {_SUMMARY_WORDS.get(a, a)}" for a in order if counts[a]) or "no files"
    return f"dry run, nothing written: {text}" if dry_run else text


def _report_changes(groups, verbose: bool, dry_run: bool = False) -> str:
    """Print what changed in ``[(outcomes, base), …]`` (unchanged files too with ``verbose``);
    return the one-line :func:`summary` for the caller to print last."""
    actions = []
    for outcomes, base in groups:
        _report([o for o in outcomes if verbose or o.action.value not in _UNCHANGED], base, show_diff=dry_run)
        actions += [o.action.value for o in outcomes]
    return summary(actions, dry_run)


def _print_version(value: bool) -> None:
    if value:
        from generator import __version__

        echo(f"scaffold {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Turn a gRPC API design into a service ready for Google Cloud Run."""


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the workspace.")] = Path("."),
    org: Annotated[str, typer.Option(help="Organisation id, e.g. xmpl.")] = ...,
    product: Annotated[str, typer.Option(help="Product id, e.g. br.")] = ...,
    gcp_project: Annotated[str, typer.Option(help="Google Cloud project id neurons deploy to.")] = "",
    region: Annotated[str, typer.Option(help="Google Cloud region.")] = "europe-west1",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing scaffold.toml.")] = False,
) -> None:
    """Create a workspace: scaffold.toml, proto/buf.yaml and .gitignore."""
    from generator import workspace

    ws = workspace.init(directory, org, product, gcp_project, region, force=force)
    echo(f"workspace {ws.org}.{ws.product} ready in {ws.root}")
    echo(f"next: cd {directory} && scaffold proto create {ws.org}.{ws.product}.resources-books-v1")


@proto_app.command("create")
def proto_create(
    name: Annotated[str, typer.Argument(help="ORG.PRODUCT.KIND-NAME-VERSION, e.g. xmpl.br.resources-books-v1")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing proto.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Write an AIP-style proto skeleton (KIND: resources or services)."""
    from generator import proto

    ws = _workspace()
    _target, outcomes = proto.create(ws, name, force=force, dry_run=dry_run)
    _report(outcomes, ws.root)
    if not dry_run:
        echo(f"next: scaffold proto gen {name}")


@proto_app.command("gen")
def proto_gen(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    all_protos: Annotated[bool, typer.Option("--all", help="Every proto in the workspace.")] = False,
    dry_run: DryRunOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate Python stubs (_pb2, _pb2_grpc, .pyi) and a descriptor set."""
    from generator import proto

    ws = _workspace()
    source = proto.resolve(ws, name, proto_file, include, all_protos)
    echo(_report_changes([(proto.gen(ws, source, dry_run=dry_run), ws.root)], verbose, dry_run))


@proto_app.command("lint")
def proto_lint(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    all_protos: Annotated[bool, typer.Option("--all", help="Every proto in the workspace.")] = False,
) -> None:
    """Check the AIP rules generation relies on; print file:line: rule: message."""
    from generator import lint, proto
    from generator.errors import LintFailed

    ws = _workspace()
    source = proto.resolve(ws, name, proto_file, include, all_protos)
    findings = lint.run(source)
    for f in findings:
        echo(str(f))
    if findings:
        raise LintFailed(f"{len(findings)} problem(s) found")
    echo(f"ok: {', '.join(source.files)}")


@proto_app.command("release")
def proto_release(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    version: Annotated[str, typer.Option("--version", help="MAJOR.MINOR.PATCH, greater than the last release.")] = ...,
    repository_url: Annotated[
        str | None,
        typer.Option(help="Python package index to upload to (default: [release] repository_url in scaffold.toml).",
                     show_default=False),
    ] = None,
    allow_breaking: Annotated[
        bool, typer.Option("--allow-breaking", help="Release even if buf finds breaking changes without a major bump.")
    ] = False,
) -> None:
    """Publish the stubs as a versioned Python package; refuse breaking changes without a major bump."""
    from generator import proto, release

    ws = _workspace()
    source = proto.resolve(ws, name, proto_file, include)
    result = release.release(ws, source, name, version, repository_url=repository_url, allow_breaking=allow_breaking)
    for finding in result.breaking:
        echo(f"   breaking  {finding}")
    _report(result.recorded, ws.root)
    against = f" (checked against {result.previous})" if result.previous else " (first release)"
    echo(f"released {result.distribution} {result.version} to {result.repository_url}{against}: {', '.join(result.files)}")
    echo(f"install: pip install --extra-index-url {release.simple_index(result.repository_url)} "
         f"{result.distribution}=={result.version}")


OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Folder name under neurons/ (default: KIND-NAME-VERSION).", show_default=False),
]


def _origin(ws, name, proto_file, include):
    from generator.neuron import Origin

    def rel(p: Path) -> str:
        p = p.resolve()
        return p.relative_to(ws.root).as_posix() if p.is_relative_to(ws.root) else str(p)

    return Origin(name or "", tuple(rel(p) for p in proto_file or ()), tuple(rel(p) for p in include or ()))


def _show(result, ws, dry_run: bool, verbose: bool = False) -> None:
    """The files that changed (every file with ``verbose``), the notes, then a one-line summary."""
    counts = _report_changes([(result.shared, ws.root), (result.outcomes, result.root)], verbose, dry_run)
    for note in result.notes:
        echo(f"   note  {note}")
    echo(counts)


StubsOpt = Annotated[
    str | None,
    typer.Option("--stubs", help="Where the proto's stubs come from: 'copied' into protobuf/, or 'released': installed "
                                 "from its latest `scaffold proto release` (default: the neuron's choice so far, "
                                 "else copied).", show_default=False),
]
StubsVersionOpt = Annotated[
    str | None,
    typer.Option("--stubs-version", help="With --stubs released: this release instead of the latest.",
                 show_default=False),
]


def _render_neuron(name, proto_file, include, out, dry_run: bool, update: bool, force: bool = False,
                   verbose: bool = False, stubs: str | None = None, stubs_version: str | None = None):
    from generator import neuron, proto

    ws = _workspace()
    source = proto.resolve(ws, name, proto_file, include)
    result = neuron.create(ws, source, name, out=out, dry_run=dry_run, update=update, force=force,
                           origin=_origin(ws, name, proto_file, include), stubs_from=stubs, stubs_version=stubs_version)
    _show(result, ws, dry_run, verbose)
    return result


@neuron_app.command("create")
def neuron_create(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    out: OutOpt = None,
    dry_run: DryRunOpt = False,
    verbose: VerboseOpt = False,
    stubs: StubsOpt = None,
    stubs_version: StubsVersionOpt = None,
) -> None:
    """Render neurons/KIND-NAME-VERSION/: server, base servicers, your methods, tests, Dockerfile, stubs."""
    result = _render_neuron(name, proto_file, include, out, dry_run, update=False, verbose=verbose, stubs=stubs,
                            stubs_version=stubs_version)
    if not dry_run:
        echo(f"next: scaffold neuron test {name or '--out ' + result.root.name}   # runs its tests against the Firestore emulator")


ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite generated files that were edited by hand.")]


@neuron_app.command("update")
def neuron_update(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    out: OutOpt = None,
    all_neurons: Annotated[bool, typer.Option("--all", help="Every neuron of the workspace (from their records).")] = False,
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
    stubs: StubsOpt = None,
    stubs_version: StubsVersionOpt = None,
) -> None:
    """Regenerate a neuron after its proto or scaffold changed; your code is kept, new RPCs get stubs.
    Prints the files that changed and a one-line summary (--verbose: every file)."""
    if all_neurons:
        from generator import neuron

        if name or proto_file or out or stubs or stubs_version:
            from generator.errors import UsageError

            raise UsageError("--all updates every neuron as recorded; leave out NAME, --proto, --out, --stubs and "
                             "--stubs-version")
        ws = _workspace()
        for result in neuron.update_all(ws, dry_run=dry_run, force=force):
            echo(f"== {result.root.name}")
            _show(result, ws, dry_run, verbose)
        return
    _render_neuron(name, proto_file, include, out, dry_run, update=True, force=force, verbose=verbose, stubs=stubs,
                   stubs_version=stubs_version)


@neuron_app.command("check")
def neuron_check(
    name: NameArg = None,
    out: OutOpt = None,
    all_neurons: Annotated[bool, typer.Option("--all", help="Every neuron of the workspace.")] = False,
) -> None:
    """Exit 1 when a neuron is stale (proto changed, older scaffold or runtime) or drifted (hand edits)."""
    from generator import neuron
    from generator.errors import StaleError

    ws = _workspace()
    roots = neuron.all_neurons(ws) if all_neurons else [neuron.locate(ws, name, out)]
    stale, edited = 0, False
    for root in roots:
        problems = neuron.check(ws, root)
        echo(f"{'stale' if problems else 'ok':>6}  {root.name}")
        for p in problems:
            echo(f"        {p}")
        stale += bool(problems)
        edited = edited or any(p.endswith("was edited by hand") for p in problems)
    if stale:
        command = "scaffold neuron update --all" if all_neurons else "scaffold neuron update"
        hint = ("a hand-edited generated file is a conflict: move the change into methods.py (yours), "
                "or pass --force to overwrite it" if edited else "your own files (methods.py, tests/) are kept")
        raise StaleError(f"{stale} of {len(roots)} neuron(s) need `{command}`", hint=hint)


@neuron_app.command("depend")
def neuron_depend(
    caller: Annotated[str, typer.Argument(help="The neuron that calls: a NAME or its folder under neurons/.")],
    callee: Annotated[str, typer.Argument(help="The neuron it calls: a NAME or its folder under neurons/.")],
    alias: Annotated[
        str | None,
        typer.Option("--as", help="Name of the client in the caller (deps.clients.ALIAS, DEP_ALIAS_TARGET); "
                                  "default: the callee's NAME part, e.g. books.", show_default=False),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """CALLER calls CALLEE: a typed client in CALLER (self.deps.clients.ALIAS), Terraform wiring and IAM for both."""
    from generator import depend

    ws = _workspace()
    dep, results = depend.depend(ws, caller, callee, alias, force=force)
    for result in results:
        echo(f"== {result.root.name}")
        _show(result, ws, False)
    echo(f"{results[0].root.name} calls {dep.folder} as self.deps.clients.{dep.alias} "
         f"(recorded in neurons/{results[0].root.name}/{depend.FILENAME})")
    echo(f"next: scaffold neuron run {results[0].root.name} {dep.folder}   # both, wired to each other")


@app.command("openapi")
def openapi_cmd(
    name: NameArg = None,
    proto_file: ProtoOpt = None,
    include: IncludeOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of printing.")] = None,
) -> None:
    """Print (or write) the OpenAPI 3 document of the HTTP/JSON gateway for a proto."""
    from generator import neuron, openapi, proto

    ws = _workspace()
    source = proto.resolve(ws, name, proto_file, include)
    api, _stubs = neuron.compile_all(source)
    dirname, title = neuron.neuron_dir_for(ws, name, source, None)
    model = neuron.build(api, dirname, title)
    if not model.routes:
        from generator.errors import UsageError

        raise UsageError("no method has a google.api.http rule, so there is no HTTP API to describe")
    text = openapi.render(api, model)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        echo(f"wrote {output}")


@neuron_app.command("deploy")
def neuron_deploy(
    name: NameArg = None,
    out: OutOpt = None,
    project: Annotated[str | None, typer.Option(help="Google Cloud project (default: scaffold.toml).")] = None,
    region: Annotated[str | None, typer.Option(help="Region (default: scaffold.toml).")] = None,
    tag: Annotated[str | None, typer.Option(help="Image tag (default: UTC time).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands and variables; run nothing.")] = False,
) -> None:
    """Build the image with Cloud Build, then terraform init and apply with its digest."""
    from generator import deploy, neuron

    ws = _workspace()
    root = neuron.locate(ws, name, out)
    plan = deploy.make_plan(ws, root, project, region, tag)
    deploy.describe(plan, echo)
    if not dry_run:
        deploy.run(plan, echo)


@neuron_app.command("run")
def neuron_run(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="One or more NAMEs (or folders under neurons/); several run together, wired to each other.",
                       show_default=False),
    ] = None,
    out: OutOpt = None,
    all_neurons: Annotated[bool, typer.Option("--all", help="Every neuron of the workspace, wired to each other.")] = False,
    port: Annotated[int, typer.Option(help="Port the gRPC server listens on (127.0.0.1); with several, the first one's.",
                                      min=1, max=65535)] = 8080,
    gateway_port: Annotated[
        int | None,
        typer.Option(help="Port of the HTTP/JSON gateway (default: --port + 1; one neuron only).", min=1, max=65535,
                     show_default=False),
    ] = None,
) -> None:
    """Run neurons locally; starts the Firestore emulator beside them when none is configured.

    Ports are checked first; when the emulator, a server or a gateway fails, the others are
    stopped and the command exits 1 saying which failed and why."""
    from generator import depend, neuron

    ws = _workspace()
    if all_neurons or len(names or ()) > 1:
        if out:
            from generator.errors import UsageError

            raise UsageError("--out names one neuron; to run several, give their NAMEs or folders")
        roots = neuron.all_neurons(ws) if all_neurons else [depend.resolve(ws, n) for n in names]
        if not roots:
            from generator.errors import UsageError

            raise UsageError(f"no neurons under {ws.neurons_root}", hint="create one with `scaffold neuron create NAME`")
        raise typer.Exit(neuron.run_many(ws, list(dict.fromkeys(roots)), port, echo))
    root = neuron.locate(ws, names[0] if names else None, out) if out or not names else depend.resolve(ws, names[0])
    raise typer.Exit(neuron.run(root, port, gateway_port))


@neuron_app.command("test", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def neuron_test(
    ctx: typer.Context,
    name: NameArg = None,
    out: OutOpt = None,
) -> None:
    """Run a neuron's own tests (extra arguments go to pytest)."""
    from generator import neuron

    root = neuron.locate(_workspace(), name, out)
    raise typer.Exit(neuron.test(root, list(ctx.args)))


certs_app = typer.Typer(help="Local certificates for TLS and mutual TLS.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("create")
def certs_create(
    hosts: Annotated[str, typer.Option(help="Comma-separated DNS names and IPs the server answers to.")] = "localhost,127.0.0.1",
    out: Annotated[Path, typer.Option(help="Folder for the files.")] = Path("certs"),
    client: Annotated[bool, typer.Option("--client", help="Also make a client certificate (mutual TLS).")] = False,
    days: Annotated[int, typer.Option(help="Validity of the server and client certificates.")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Make a local CA and a server (and client) certificate; keys are written with mode 0600."""
    from generator import certs

    _report(certs.create(out, hosts.split(","), client=client, days=days, force=force), out)
    echo(f"server: TLS_CERT_FILE={out}/server.pem TLS_KEY_FILE={out}/server.key"
         + (f" TLS_CLIENT_CA_FILE={out}/ca.pem" if client else ""))
    echo(f"client: --cacert {out}/ca.pem" + (" (mTLS: client.pem, client.key)" if client else ""))


@app.command("call")
def call_cmd(
    target: Annotated[str, typer.Argument(help="host:port of the server.")],
    method: Annotated[str, typer.Argument(help="package.Service/Method")],
    data: Annotated[str, typer.Argument(help="The request as JSON.")] = "{}",
    cacert: Annotated[Path | None, typer.Option(help="CA certificate: use TLS and trust this CA.")] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client key (mutual TLS).")] = None,
    tls: Annotated[bool, typer.Option("--tls", help="TLS with the system's roots (e.g. Cloud Run).")] = False,
    api_key: Annotated[str | None, typer.Option(help="Sent as x-api-key metadata.")] = None,
    header: Annotated[list[str] | None, typer.Option("-H", "--header", help="Metadata key:value (repeatable).")] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of the call in seconds.", min=0.001)] = 30.0,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to wait for a connection.", min=0.001)] = 3.0,
) -> None:
    """Call a method through server reflection; print the JSON response or the status."""
    from generator import call

    opts = call.CallOptions(target, method, data, cacert, cert, key, tls, api_key, tuple(header or ()), timeout,
                            connect_timeout)
    call.call(opts, echo)


def _name(info) -> str:
    from typer.main import get_command_name

    return info.name or get_command_name(info.callback.__name__)


def _only_command(argv: list[str]) -> typer.Typer:
    """``app`` reduced to the one command ``argv`` starts with (``init``, ``neuron create``, …),
    else ``app`` itself. typer turns every registered command into a click command before it
    parses anything (~25 ms for all of them); a command's own parsing, help and errors do not
    depend on its siblings, which only a group's help (``scaffold neuron --help``) lists."""
    import copy

    for info in app.registered_commands:
        if argv[:1] == [_name(info)]:
            narrowed = copy.copy(app)
            narrowed.registered_commands, narrowed.registered_groups = [info], []
            return narrowed
    for group in app.registered_groups:
        if argv[:1] == [group.name] and len(argv) > 1:
            for info in group.typer_instance.registered_commands:
                if argv[1] == _name(info):
                    sub = copy.copy(group.typer_instance)
                    sub.registered_commands = [info]
                    narrowed = copy.copy(app)
                    narrowed.registered_commands, narrowed.registered_groups = [], [copy.copy(group)]
                    narrowed.registered_groups[0].typer_instance = sub
                    return narrowed
    return app


def run(argv: list[str] | None = None) -> int:
    """Run the app on ``argv``; turn typed errors into one message and an exit code."""
    try:
        argv = sys.argv[1:] if argv is None else argv
        result = _only_command(argv)(args=argv, prog_name="scaffold", standalone_mode=False)
    except ScaffoldError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("stopped by user", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # bad usage: typer prints it with the usage line
        exc.show()
        return exc.exit_code
    except OSError as exc:  # e.g. a read-only folder or a full disk
        where = f": {exc.filename}" if exc.filename else ""
        typer.secho(f"error: {exc.strerror or exc}{where}", fg=typer.colors.RED, err=True)
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
