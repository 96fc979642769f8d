"""Library behind ``scaffold proto release``: a proto becomes a versioned Python package.

A release compiles the proto's stubs (``_pb2``, ``_pb2_grpc``, ``.pyi``, ``py.typed``) into a
wheel and an sdist, both byte-for-byte reproducible, uploads them with twine to a Python
package index, and records the release in the workspace (``releases/releases.toml`` and the
descriptor set ``releases/<distribution>/<version>.binpb``, both meant to be committed) so the
next release is checked against it with ``buf breaking``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator import protoc
from generator.errors import ConflictError, ToolError, UsageError
from generator.workspace import Workspace
from generator.writer import FileOwner, Outcome, Plan, write

LOG = "releases/releases.toml"
_SEMVER_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
# Zip cannot hold times before 1980; every file in both archives gets this one.
_EPOCH = 315532800  # 1980-01-01T00:00:00Z
_DEFAULT_BUF_CONFIG = '{"version": "v2", "breaking": {"use": ["FILE"]}}'
AUTH_HINT = (
    "twine reads credentials from TWINE_USERNAME / TWINE_PASSWORD or from keyring "
    "(Artifact Registry: pip install keyrings.google-artifactregistry-auth, then gcloud auth "
    "application-default login); scaffold.toml never holds them"
)


class BreakingChange(ConflictError):
    """``buf breaking`` found changes that break clients of the previous release."""


@dataclass(frozen=True)
class Entry:
    """One line of the release log."""

    distribution: str
    version: str
    protos: tuple[str, ...]
    descriptor: str  # path of the descriptor set, relative to the workspace root
    repository_url: str
    wheel_sha256: str


@dataclass(frozen=True)
class Result:
    """What :func:`release` did."""

    distribution: str
    version: str
    files: tuple[str, ...]  # wheel and sdist file names, as uploaded
    repository_url: str
    previous: str | None  # the version checked against, None for a first release
    breaking: tuple[str, ...]  # buf's findings let through by a major bump or --allow-breaking
    recorded: tuple[Outcome, ...]


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; raise :class:`UsageError` for anything but MAJOR.MINOR.PATCH."""
    m = _SEMVER_RE.match(text)
    if not m:
        raise UsageError(
            f"invalid --version {text!r}: expected a semantic version MAJOR.MINOR.PATCH of plain numbers (e.g. 1.0.0)"
        )
    return int(m[1]), int(m[2]), int(m[3])


def distribution_name(ws: Workspace, name: str | None, source: protoc.Source) -> str:
    """``xmpl-br-resources-books-v1`` for NAME; ORG-PRODUCT-<folder> for ``--proto`` files."""
    from generator import names

    if name:
        n = names.parse(name)
        return f"{n.org}-{n.product}-{n.neuron_dir}"
    return f"{ws.org}-{ws.product}-{names.default_folder(source.files[0])}"


def _wheel_name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def check_repository_url(url: str) -> str:
    """The index URL, checked: http(s), a host, no credentials in it. Raise :class:`UsageError`."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"invalid repository URL {url!r}: expected http(s)://HOST/PATH",
            hint="Artifact Registry: https://REGION-python.pkg.dev/PROJECT/REPOSITORY/",
        )
    if parts.username or parts.password:
        raise UsageError("the repository URL must not contain a user name or password", hint=AUTH_HINT)
    return url


def load_log(ws: Workspace) -> list[Entry]:
    """Every release recorded in ``releases/releases.toml`` (empty when there is none)."""
    import tomllib

    from generator.errors import WorkspaceError

    path = ws.root / LOG
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return [
            Entry(str(r["distribution"]), str(r["version"]), tuple(r["protos"]), str(r["descriptor"]),
                  str(r["repository_url"]), str(r["wheel_sha256"]))
            for r in data.get("release", [])
        ]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise WorkspaceError(f"cannot read {path}: {exc}", hint="restore it from version control") from None


def _render_log(entries: list[Entry]) -> str:
    out = ["# Releases made by `scaffold proto release`. Commit this file and releases/*/*.binpb:",
           "# each release's descriptor set is the baseline `buf breaking` checks the next one against."]
    for e in entries:
        out += ["", "[[release]]"]
        for key, value in e.__dict__.items():
            out.append(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")
    return "\n".join(out) + "\n"


def previous_release(entries: list[Entry], distribution: str, version: str) -> Entry | None:
    """The latest release of ``distribution``; raise :class:`ConflictError` if ``version`` is not newer."""
    mine = sorted((e for e in entries if e.distribution == distribution), key=lambda e: parse_version(e.version))
    if any(e.version == version for e in mine):
        raise ConflictError(
            f"{distribution} {version} is already released; a released version is never replaced",
            hint=f"release a new version (after {mine[-1].version})",
        )
    if mine and parse_version(version) <= parse_version(mine[-1].version):
        raise ConflictError(
            f"version {version} is not greater than the last release of {distribution}, {mine[-1].version}",
            hint="use a higher version",
        )
    return mine[-1] if mine else None


def buf_executable() -> str:
    """The ``buf`` binary (pip package buf-bin, beside this Python, or on PATH)."""
    import shutil

    beside = Path(sys.executable).parent / "buf"
    found = str(beside) if beside.is_file() else shutil.which("buf")
    if not found:
        raise ToolError("buf is not installed; it checks releases for breaking changes", hint="pip install buf-bin")
    return found


def breaking_changes(ws: Workspace, source: protoc.Source, image: Path, baseline: Path) -> list[str]:
    """``buf breaking`` of ``image`` against ``baseline`` with the workspace's buf config.

    Returns buf's findings (``file:line:col:message``, paths as on disk); raises
    :class:`ToolError` when buf itself fails.
    """
    config = ws.proto_root / "buf.yaml"
    args = [buf_executable(), "breaking", str(image), "--against", str(baseline),
            "--config", str(config) if config.is_file() else _DEFAULT_BUF_CONFIG]
    for f in source.files:
        args += ["--path", f]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError("buf breaking did not finish within 120 s") from None
    if r.returncode == 0:
        return []
    if r.returncode != 100:  # 100: breaking changes found; anything else: buf could not run
        raise ToolError(f"buf breaking failed: {(r.stderr or r.stdout).strip()}", hint=f"check {config}")
    findings = []
    for line in r.stdout.strip().splitlines():
        virtual, sep, rest = line.partition(":")
        real = source.locate(virtual) if sep else None
        findings.append(f"{protoc.display_path(real)}:{rest}" if real else line)
    return findings


def _stub_files(source: protoc.Source) -> dict[str, bytes]:
    """The package's files: stubs of the protos and their local imports, ``__init__.py`` and
    ``py.typed`` in each folder holding modules. Folders above them stay namespace packages,
    so several released packages of one org install side by side."""
    from generator.proto import _namespace_owned

    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="scaffold-release-") as tmp:
        out = Path(tmp)
        protoc.compile_protos(source, python_out=out, files=protoc.local_closure(source))
        for path in sorted(out.rglob("*")):
            if path.is_file():
                files[path.relative_to(out).as_posix()] = path.read_bytes()
    for folder in sorted({rel.rpartition("/")[0] for rel in files if rel.endswith(".py")}):
        if folder and folder.split("/")[0] not in _namespace_owned():
            files[f"{folder}/__init__.py"] = b""
            files[f"{folder}/py.typed"] = b""
    return dict(sorted(files.items()))


def requirements(files: dict[str, bytes]) -> list[str]:
    """Requires-Dist lines: floors at the versions the stubs were generated for."""
    from generator import pins

    text = b"\n".join(files.values()).decode("utf-8", "replace")
    proto = re.search(r"^# Protobuf Python Version: ([0-9][0-9.]*)", text, re.MULTILINE)
    grpc = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'", text, re.MULTILINE)
    reqs = [f"grpcio>={grpc[1] if grpc else pins._installed('grpcio-tools')}",
            f"protobuf>={proto[1] if proto else pins._installed('protobuf')}"]
    if re.search(r"^from google\.(?!protobuf\b)", text, re.MULTILINE):  # google.api, google.type, …
        reqs.append(f"googleapis-common-protos>={pins._installed('googleapis-common-protos')}")
    return reqs


@dataclass(frozen=True)
class Package:
    distribution: str
    version: str
    title: str
    protos: tuple[str, ...]
    files: dict[str, bytes]
    requires: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"{_wheel_name(self.distribution)}-{self.version}"

    @property
    def tops(self) -> tuple[str, ...]:
        return tuple(sorted({rel.split("/")[0] for rel in self.files}))

    def readme(self) -> str:
        from generator.render import render

        modules = sorted(rel[:-3].replace("/", ".") for rel in self.files if rel.endswith("_pb2_grpc.py"))
        return render("release/README.md.j2", pkg=self, modules=modules)

    def metadata(self) -> str:
        lines = ["Metadata-Version: 2.1", f"Name: {self.distribution}", f"Version: {self.version}",
                 f"Summary: Python gRPC stubs for {self.title}", "Requires-Python: >=3.9",
                 *(f"Requires-Dist: {r}" for r in self.requires), "Description-Content-Type: text/markdown"]
        return "\n".join(lines) + "\n\n" + self.readme()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(pkg: Package, out: Path) -> Path:
    """Write ``<stem>-py3-none-any.whl`` into ``out`` (fixed times and order); return its path."""
    import zipfile

    from generator import __version__

    info = f"{pkg.stem}.dist-info"
    members = dict(pkg.files)
    members[f"{info}/METADATA"] = pkg.metadata().encode()
    members[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: scaffold {__version__}\n"
                                "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    members[f"{info}/top_level.txt"] = "".join(t + "\n" for t in pkg.tops).encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in members.items())
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = out / f"{pkg.stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o100644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return path


def build_sdist(pkg: Package, out: Path) -> Path:
    """Write ``<stem>.tar.gz`` (a hatchling project) into ``out``, reproducibly; return its path."""
    import gzip
    import tarfile

    from generator.render import render

    members = {"PKG-INFO": pkg.metadata().encode(),
               "README.md": pkg.readme().encode(),
               "pyproject.toml": render("release/pyproject.toml.j2", pkg=pkg, q=json.dumps).encode(),
               **pkg.files}
    path = out / f"{pkg.stem}.tar.gz"
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members.items()):
            ti = tarfile.TarInfo(f"{pkg.stem}/{name}")
            ti.size, ti.mtime, ti.mode = len(data), _EPOCH, 0o644
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            tar.addfile(ti, io.BytesIO(data))
    return path


def package(distribution: str, version: str, source: protoc.Source, title: str) -> Package:
    """Compile the stubs and describe the distribution (nothing is written)."""
    files = _stub_files(source)
    return Package(distribution, version, title, source.files, files, tuple(requirements(files)))


def publish(paths: list[Path], repository_url: str) -> None:
    """Upload with twine; raise :class:`ToolError` with twine's reason when it fails."""
    import importlib.util

    if importlib.util.find_spec("twine") is None:
        raise ToolError("twine is not installed; it uploads releases", hint="pip install 'scaffold[release]' (or twine)")
    cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", repository_url, *map(str, paths)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"uploading to {repository_url} did not finish within 300 s") from None
    if r.returncode != 0:
        text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + "\n" + r.stderr)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln.removeprefix("ERROR").strip() for ln in lines if ln.startswith("ERROR")]
        reason = " ".join(errors or lines[-1:]) or f"twine exited with {r.returncode}"
        refused = re.search(r"\[Errno -?[0-9]+\] ([^'\")]+)", reason) if "ConnectionError" in reason else None
        if refused:  # requests' repr of urllib3's retry error: keep the operating system's reason
            reason = f"cannot connect ({refused[1].strip()})"
        hint = AUTH_HINT if re.search(r"credential|401|403|unauthori[sz]ed|forbidden", reason, re.IGNORECASE) else (
            "check --repository-url (or [release] repository_url in scaffold.toml) and that the index is reachable")
        raise ToolError(f"upload to {repository_url} failed: {reason}", hint=hint)


def release(
    ws: Workspace,
    source: protoc.Source,
    name: str | None,
    version: str,
    *,
    repository_url: str | None = None,
    allow_breaking: bool = False,
) -> Result:
    """Check, build, upload and record one release; return what was done.

    Raises :class:`UsageError` (bad version or URL), :class:`ConflictError` (version not new),
    :class:`BreakingChange` (breaking without a major bump or ``allow_breaking``),
    :class:`ToolError` (buf or twine failed). Nothing is recorded unless the upload succeeded.
    """
    major = parse_version(version)[0]
    url = repository_url or ws.release_repository_url
    if not url:
        raise UsageError(
            "no package index to publish to",
            hint="pass --repository-url URL or set repository_url under [release] in scaffold.toml",
        )
    check_repository_url(url)
    entries = load_log(ws)
    distribution = distribution_name(ws, name, source)
    previous = previous_release(entries, distribution, version)
    pkg = package(distribution, version, source, name or ", ".join(source.files))
    with tempfile.TemporaryDirectory(prefix="scaffold-release-") as tmp:
        out = Path(tmp)
        image = out / "image.binpb"
        image.write_bytes(protoc.descriptor_set(source))
        found: list[str] = []
        if previous is not None:
            baseline = ws.root / previous.descriptor
            if not baseline.is_file():
                from generator.errors import WorkspaceError

                raise WorkspaceError(
                    f"the descriptor set of release {previous.version} is missing: {baseline}",
                    hint="restore it from version control (releases/ is meant to be committed)",
                )
            found = breaking_changes(ws, source, image, baseline)
            if found and major <= parse_version(previous.version)[0] and not allow_breaking:
                raise BreakingChange(
                    f"{pkg.distribution} {version} breaks clients of {previous.version}:\n  " + "\n  ".join(found),
                    hint=f"release it as {parse_version(previous.version)[0] + 1}.0.0, or pass --allow-breaking",
                )
        dist = out / "dist"
        dist.mkdir()
        wheel, sdist = build_wheel(pkg, dist), build_sdist(pkg, dist)
        publish([wheel, sdist], url)
        descriptor = f"releases/{pkg.distribution}/{version}.binpb"
        entry = Entry(pkg.distribution, version, pkg.protos, descriptor, url, hashlib.sha256(wheel.read_bytes()).hexdigest())
        plan = Plan()
        plan.add(descriptor, image.read_bytes(), FileOwner.GENERATED)
        plan.add(LOG, _render_log([*entries, entry]), FileOwner.GENERATED)
        recorded = write(ws.root, plan)
        return Result(pkg.distribution, version, (wheel.name, sdist.name), url,
                      previous.version if previous else None, tuple(found), tuple(recorded))



# --- Neurons on released stubs (issue 15) -----------------------------------------------------
# `scaffold neuron create|update NAME --stubs released`: the neuron installs its proto's stubs
# from the released package instead of carrying them in protobuf/. generator/neuron.py calls
# :func:`neuron_stubs` (create/update), :func:`stale_pin` (check) and :func:`serves_released`.

STUBS_MODES = ("copied", "released")
STUBS_REQUIREMENTS = "requirements-stubs.txt"


@dataclass(frozen=True)
class Pin:
    """The released package a neuron installs its own stubs from."""

    distribution: str
    version: str
    protos: tuple[str, ...]
    index: str  # the simple index pip reads, e.g. https://REGION-python.pkg.dev/PROJECT/REPO/simple/
    sha256: str  # of the wheel ("" when the release recorded none)

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


def simple_index(repository_url: str) -> str:
    """The index pip installs from for an upload URL: ``<url>/simple/`` (pypiserver, Artifact
    Registry and devpi all serve it there); a URL already ending in ``/simple`` is kept."""
    url = repository_url.rstrip("/")
    return f"{url}/" if url.endswith("/simple") else f"{url}/simple/"


def _api_of(descriptors: bytes, files: tuple[str, ...]) -> dict[str, bytes]:
    """``files``' FileDescriptorProtos in a descriptor set, without source info (comments and
    positions do not reach the stubs), serialised deterministically: name -> bytes."""
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptors)
    out = {}
    for f in fds.file:
        if f.name in files:
            f.ClearField("source_code_info")
            out[f.name] = f.SerializeToString(deterministic=True)
    return out


def matches_release(ws: Workspace, entry: Entry, source: protoc.Source, descriptors: bytes) -> bool:
    """Whether the current protos (``descriptors``: their compiled set, imports included) define
    exactly what ``entry`` released: the same descriptors for the proto and every local import
    its package ships stubs of. Raises :class:`WorkspaceError` when the release's set is gone."""
    from generator.errors import WorkspaceError

    baseline = ws.root / entry.descriptor
    try:
        released = baseline.read_bytes()
    except OSError:
        raise WorkspaceError(f"the descriptor set of release {entry.version} is missing: {baseline}",
                             hint="restore it from version control (releases/ is meant to be committed)") from None
    shipped = protoc.local_closure(source)
    return _api_of(descriptors, shipped) == _api_of(released, shipped)


def releases_of(ws: Workspace, distribution: str) -> list[Entry]:
    """The releases of ``distribution`` in the workspace's log, oldest first."""
    return sorted((e for e in load_log(ws) if e.distribution == distribution), key=lambda e: parse_version(e.version))


def pin_for(ws: Workspace, source: protoc.Source, name: str | None, descriptors: bytes,
            version: str | None = None) -> Pin:
    """The release a neuron of ``source`` installs its stubs from: ``version``, or the latest.

    Raises :class:`UsageError` when the proto has no release (or not that version), or when
    the current proto differs from the released one: a neuron must never serve a proto its
    stubs do not match.
    """
    if version is not None:
        parse_version(version)
    distribution = distribution_name(ws, name, source)
    mine = releases_of(ws, distribution)
    command = f"scaffold proto release {name or '--proto ' + source.files[0]} --version X.Y.Z"
    if not mine:
        raise UsageError(f"{distribution} has no release in {LOG}, so there are no released stubs to install",
                         hint=f"release the proto first: `{command}` (or leave out --stubs released)")
    entry = mine[-1] if version is None else next((e for e in mine if e.version == version), None)
    if entry is None:
        raise UsageError(f"{distribution} {version} was never released; released: {', '.join(e.version for e in mine)}",
                         hint="pass one of those to --stubs-version, or leave it out for the latest")
    if not matches_release(ws, entry, source, descriptors):
        raise UsageError(f"proto changed since release {entry.version} of {distribution}; run `scaffold proto release` first",
                         hint=f"`{command}` with a version after {mine[-1].version}, then run this again")
    return Pin(distribution, entry.version, entry.protos,
               simple_index(entry.repository_url or ws.release_repository_url), entry.wheel_sha256)


def neuron_stubs(ws: Workspace, source: protoc.Source, name: str | None, record, mode: str | None,
                 version: str | None, own: dict[str, bytes], descriptors: bytes) -> Pin | None:
    """How a neuron gets its own stubs: None when they are copied into protobuf/ (``own``, the
    stubs compile_all made, stay in its plan), a :class:`Pin` when they come from a release.

    ``mode``: ``"copied"``, ``"released"``, or None to keep the choice ``record`` (the neuron's
    provenance) made. Raises :class:`UsageError` as :func:`pin_for` does, and for a
    ``version`` without released stubs.
    """
    if mode is not None and mode not in STUBS_MODES:
        raise UsageError(f"invalid --stubs {mode!r}: expected one of {', '.join(STUBS_MODES)}")
    if mode is None:
        mode = "released" if record is not None and record.stubs_distribution else "copied"
    if mode == "copied":
        if version is not None:
            raise UsageError("--stubs-version pins released stubs; add --stubs released")
        return None
    return pin_for(ws, source, name, descriptors, version)


def stale_pin(ws: Workspace, record) -> str:
    """Why a neuron's release pin is stale ("" when it is not, or it copies its stubs)."""
    if not record.stubs_distribution:
        return ""
    mine = releases_of(ws, record.stubs_distribution)
    if not any(e.version == record.stubs_version for e in mine):
        return f"pins {record.stubs_distribution} {record.stubs_version}, which {LOG} does not record"
    if parse_version(mine[-1].version) > parse_version(record.stubs_version):
        return f"pins {record.stubs_distribution} {record.stubs_version}; the latest release is {mine[-1].version}"
    return ""


def serves_released(root: Path, proto: str) -> bool:
    """Whether the neuron in ``root`` serves ``proto`` from released stubs (its provenance says so)."""
    from generator import provenance

    try:
        record = provenance.load(root)
    except ConflictError:
        return False
    return record is not None and proto in record.stubs_protos


def check_installed(python: str, root: Path) -> None:
    """For a neuron on released stubs: raise :class:`ToolError` unless ``python`` has exactly
    the pinned release installed (``neuron run``/``test`` import the stubs from there)."""
    from generator import provenance

    record = provenance.load(root)
    if record is None or not record.stubs_distribution:
        return
    probe = f"import importlib.metadata as m; print(m.version({record.stubs_distribution!r}))"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False, timeout=60)
    found = r.stdout.strip() if r.returncode == 0 else ""
    if found != record.stubs_version:
        raise ToolError(
            f"{root.name} runs on the released stubs {record.stubs_distribution}=={record.stubs_version}, but {python} has "
            + (f"{found} installed" if found else "none installed"),
            hint=f"in {root}: pip install --no-deps -r {STUBS_REQUIREMENTS}",
        )
